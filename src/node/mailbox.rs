//! Bounded channels whose receiving thread parks until a sender rings its doorbell.
//!
//! A crossbeam `recv` or `select!` spins and then calls `sched_yield` several times before it
//! parks. With a node's four threads waking each other several times per write, that was
//! about 9 yields per write on a leader (docs/BENCHMARKS.md, "Write path, round 2"), CPU burnt
//! on a 2-core machine where the thread being waited for needs the core. The node's threads
//! therefore only ever `try_recv`, and sleep in `thread::park` when every queue they read is
//! empty: a [`Doorbell`] is that sleep, a [`Ringing`] sender rings it after queuing.
//!
//! Owned by: each receiving thread (consensus, storage, apply) owns one doorbell, shared by
//! every channel it reads; any thread may hold a `Ringing` sender.
//!
//! Invariants: a message queued before a ring is seen by the receiver's next look at its
//! queues (the park token of `std::thread` is never lost: a ring that comes between the
//! receiver's last `try_recv` and its `park` makes that `park` return at once); a ring costs
//! a system call only when the receiver is actually parked, so the first message of a batch
//! wakes the receiver and the rest are an atomic swap each; dropping a sender rings too, so a
//! receiver sees the disconnection without a timeout.

use crossbeam_channel::{Receiver, SendError, Sender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Instant;

/// Where one thread sleeps while it has nothing to do.
#[derive(Clone, Debug, Default)]
pub(crate) struct Doorbell {
    /// The thread that waits; set by its first [`Doorbell::wait`].
    sleeper: Arc<OnceLock<Thread>>,
}

impl Doorbell {
    /// A doorbell no thread waits on yet.
    pub(crate) fn new() -> Doorbell {
        Doorbell::default()
    }

    /// Wakes the waiting thread, or makes its next wait return at once.
    pub(crate) fn ring(&self) {
        if let Some(thread) = self.sleeper.get() {
            thread.unpark();
        }
    }

    /// Sleeps until rung or until `deadline`. Only ever called by one thread: the first call
    /// binds the doorbell to it and returns at once, since a ring before that was lost and
    /// the caller must look at its queues again. May return early (spurious wake-ups): the
    /// caller always looks at its queues after it.
    pub(crate) fn wait(&self, deadline: Option<Instant>) {
        if self.sleeper.get().is_none() {
            let _ = self.sleeper.set(std::thread::current());
            return;
        }
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let now = Instant::now();
                if now < deadline {
                    std::thread::park_timeout(deadline - now);
                }
            }
        }
    }
}

/// The sending half of a bounded channel that rings the receiver's doorbell.
#[derive(Debug)]
pub(crate) struct Ringing<T> {
    /// `None` only while dropping (the sender is dropped before the last ring).
    sender: Option<Sender<T>>,
    doorbell: Doorbell,
}

impl<T> Clone for Ringing<T> {
    fn clone(&self) -> Self {
        Ringing {
            sender: self.sender.clone(),
            doorbell: self.doorbell.clone(),
        }
    }
}

impl<T> Drop for Ringing<T> {
    fn drop(&mut self) {
        // The receiver must see the disconnection, which it learns from an empty `try_recv`.
        drop(self.sender.take());
        self.doorbell.ring();
    }
}

impl<T> Ringing<T> {
    /// Wraps `sender` so that every send rings `doorbell`.
    pub(crate) fn new(sender: Sender<T>, doorbell: Doorbell) -> Ringing<T> {
        Ringing {
            sender: Some(sender),
            doorbell,
        }
    }

    fn sender(&self) -> &Sender<T> {
        self.sender
            .as_ref()
            .expect("a Ringing sender is used only before drop")
    }

    /// Queues `message` without ringing: call [`Ringing::ring`] once after a batch.
    pub(crate) fn try_push(&self, message: T) -> Result<(), TrySendError<T>> {
        self.sender().try_send(message)
    }

    /// Queues `message`, waiting for room, and rings.
    pub(crate) fn send(&self, message: T) -> Result<(), SendError<T>> {
        let result = self.sender().send(message);
        self.doorbell.ring();
        result
    }

    /// Queues `message`, waiting up to `timeout` for room, and rings.
    pub(crate) fn send_timeout(
        &self,
        message: T,
        timeout: std::time::Duration,
    ) -> Result<(), crossbeam_channel::SendTimeoutError<T>> {
        let result = self.sender().send_timeout(message, timeout);
        self.doorbell.ring();
        result
    }

    /// Wakes the receiver (after [`Ringing::try_push`]).
    pub(crate) fn ring(&self) {
        self.doorbell.ring();
    }

    /// True when the queue has no room for another message.
    pub(crate) fn is_full(&self) -> bool {
        self.sender().is_full()
    }
}

/// A bounded channel of `depth` whose sender rings `doorbell`, the receiver's.
pub(crate) fn ringing<T>(depth: usize, doorbell: &Doorbell) -> (Ringing<T>, Receiver<T>) {
    let (sender, receiver) = crossbeam_channel::bounded(depth);
    (Ringing::new(sender, doorbell.clone()), receiver)
}

/// A sender whose receiver does not sleep on a doorbell (it blocks in `recv` itself, or
/// only polls): its rings go nowhere.
pub(crate) fn unrung<T>(sender: Sender<T>) -> Ringing<T> {
    Ringing::new(sender, Doorbell::new())
}

/// What [`next_or_wait`] found.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// A message.
    Message(T),
    /// The deadline passed, or the doorbell rang for another queue (look again).
    Idle,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

/// Takes the next message of `receiver`, sleeping on `doorbell` until one arrives or
/// `deadline` passes. For a thread that reads only this one queue.
pub(crate) fn next_or_wait<T>(
    receiver: &Receiver<T>,
    doorbell: &Doorbell,
    deadline: Option<Instant>,
) -> Next<T> {
    loop {
        match receiver.try_recv() {
            Ok(message) => return Next::Message(message),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Next::Disconnected,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Next::Idle;
        }
        doorbell.wait(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_message_sent_from_another_thread_wakes_the_parked_receiver() {
        let doorbell = Doorbell::new();
        let (sender, receiver) = ringing(4, &doorbell);
        let producer = std::thread::spawn(move || {
            // `send` waits for room: a receiver descheduled on a busy machine must not turn
            // into a full queue and a failed test.
            for i in 0..100u32 {
                sender.send(i).unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        let mut got = Vec::new();
        while let Next::Message(i) = next_or_wait(&receiver, &doorbell, None) {
            got.push(i);
        }
        producer.join().unwrap();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_the_last_sender_wakes_the_receiver_with_disconnected() {
        let doorbell = Doorbell::new();
        let (sender, receiver) = ringing::<u8>(4, &doorbell);
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(sender);
        });
        assert!(matches!(
            next_or_wait(&receiver, &doorbell, None),
            Next::Disconnected
        ));
        dropper.join().unwrap();
    }

    #[test]
    fn a_deadline_ends_the_wait_with_idle() {
        let doorbell = Doorbell::new();
        let (_sender, receiver) = ringing::<u8>(4, &doorbell);
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(matches!(
            next_or_wait(&receiver, &doorbell, Some(deadline)),
            Next::Idle
        ));
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn pushed_messages_arrive_after_one_ring() {
        let doorbell = Doorbell::new();
        let (sender, receiver) = ringing(8, &doorbell);
        for i in 0..5u8 {
            sender.try_push(i).unwrap();
        }
        sender.ring();
        let got: Vec<u8> = receiver.try_iter().collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
    fn thread_cpu() -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes one `timespec` into the pointer it is given, which
        // points at a live local.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// What one hand-off between two of a node's threads costs on this machine: the price
    /// every wake-up on a write's path pays (docs/BENCHMARKS.md, "Issue 13 on a quiet
    /// machine"). Two threads pass one message back and forth through `ringing` channels,
    /// each parked on its doorbell between messages, as the consensus, storage and apply
    /// threads do at one client; prints the wall time and the CPU time (both threads) per
    /// hand-off. Run with `cargo test --release -p rcraft --lib
    /// node::mailbox::tests::handoff_cost -- --ignored --nocapture` (`HANDOFF_ROUNDS`, default
    /// 20000 round trips per pass, 5 passes).
    #[test]
    #[ignore = "benchmark: run explicitly in release"]
    fn handoff_cost() {
        let rounds: u32 = std::env::var("HANDOFF_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        for pass in 0..5 {
            let (ping_bell, pong_bell) = (Doorbell::new(), Doorbell::new());
            let (ping, pings) = ringing::<u32>(1, &pong_bell);
            let (pong, pongs) = ringing::<u32>(1, &ping_bell);
            let answerer = std::thread::spawn(move || {
                let started = thread_cpu();
                while let Next::Message(n) = next_or_wait(&pings, &pong_bell, None) {
                    pong.send(n).unwrap();
                }
                thread_cpu() - started
            });
            // Bind the doorbell to this thread before the first message.
            ping_bell.wait(None);
            let (wall, cpu) = (Instant::now(), thread_cpu());
            for n in 0..rounds {
                ping.send(n).unwrap();
                match next_or_wait(&pongs, &ping_bell, None) {
                    Next::Message(m) => assert_eq!(m, n),
                    other => panic!("expected the answer {n}, got {other:?}"),
                }
            }
            let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
            drop(ping);
            let answerer_cpu = answerer.join().unwrap();
            let handoffs = 2 * rounds;
            println!(
                "pass {pass}: {handoffs} hand-offs, {:.1} us wall and {:.1} us CPU (both threads) \
                 per hand-off",
                wall.as_secs_f64() * 1e6 / f64::from(handoffs),
                (cpu + answerer_cpu).as_secs_f64() * 1e6 / f64::from(handoffs),
            );
        }
    }
}
