//! The `rcraft` binary: server, client and admin commands (see `../shared/CONTRACT.md`).

fn main() {
    eprintln!("rcraft: the server and client commands are not built yet (issue #6: the node)");
    std::process::exit(2);
}
