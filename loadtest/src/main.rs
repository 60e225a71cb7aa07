//! `rcraft-loadtest`: the stress tool (issue #7).

fn main() {
    eprintln!("rcraft-loadtest: not built yet (issue #7: the loadtest needs the node and client)");
    std::process::exit(2);
}
