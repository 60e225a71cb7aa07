//! The KV state machine through its public `StateMachine` face, against a plain `BTreeMap`
//! model: random command sequences give the model's answers, and a snapshot taken at any
//! point restores to a store that answers every later command the same way.

use proptest::prelude::*;
use rcraft::StateMachine;
use rcraft::kv::{KvCommand, KvResponse, KvStore};
use rcraft::wire::LogIndex;
use std::collections::BTreeMap;

fn command() -> impl Strategy<Value = KvCommand> {
    let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(|k| k.as_bytes().to_vec());
    let value = prop::sample::select(vec!["1", "2", ""]).prop_map(|v| v.as_bytes().to_vec());
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(key, value)| KvCommand::Put { key, value }),
        key.clone().prop_map(|key| KvCommand::Get { key }),
        key.clone().prop_map(|key| KvCommand::Delete { key }),
        (key, prop::option::of(value.clone()), value)
            .prop_map(|(key, expected, new)| KvCommand::Cas { key, expected, new }),
        (prop::sample::select(vec!["", "a", "b", "z"]), 1u32..3).prop_map(|(prefix, limit)| {
            KvCommand::Scan {
                prefix: prefix.as_bytes().to_vec(),
                limit,
            }
        }),
    ]
}

fn model_answer(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, command: &KvCommand) -> KvResponse {
    match command {
        KvCommand::Put { key, value } => {
            model.insert(key.clone(), value.clone());
            KvResponse::Done
        }
        KvCommand::Get { key } => KvResponse::Value(model.get(key).cloned()),
        KvCommand::Scan { prefix, limit } => {
            let matching: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            let more = matching.len() > *limit as usize;
            let entries = matching.into_iter().take(*limit as usize).collect();
            KvResponse::Entries { entries, more }
        }
        KvCommand::Delete { key } => {
            model.remove(key);
            KvResponse::Done
        }
        KvCommand::Cas { key, expected, new } => {
            let current = model.get(key).cloned();
            if current == *expected {
                model.insert(key.clone(), new.clone());
                KvResponse::Cas {
                    swapped: true,
                    current: None,
                }
            } else {
                KvResponse::Cas {
                    swapped: false,
                    current,
                }
            }
        }
    }
}

fn apply(store: &mut KvStore, index: u64, command: &KvCommand) -> KvResponse {
    let bytes = match command {
        KvCommand::Get { .. } | KvCommand::Scan { .. } => store.query(&command.encode()),
        _ => store.apply(LogIndex(index), &command.encode()),
    };
    KvResponse::decode(&bytes).expect("the store answers in its own format")
}

proptest! {
    #[test]
    fn store_matches_the_model_and_snapshots_are_faithful(
        commands in prop::collection::vec(command(), 0..60),
        cut in 0usize..60,
    ) {
        let mut model = BTreeMap::new();
        let mut store = KvStore::new();
        let mut restored: Option<KvStore> = None;
        for (i, command) in commands.iter().enumerate() {
            if i == cut {
                let mut snapshot = Vec::new();
                store.snapshot(&mut snapshot).unwrap();
                let mut fresh = KvStore::new();
                fresh.restore(&mut &snapshot[..]).unwrap();
                restored = Some(fresh);
            }
            let expected = model_answer(&mut model, command);
            prop_assert_eq!(apply(&mut store, i as u64 + 1, command), expected.clone());
            if let Some(copy) = restored.as_mut() {
                prop_assert_eq!(apply(copy, i as u64 + 1, command), expected);
            }
        }
        if let Some(copy) = restored {
            prop_assert_eq!(copy, store);
        }
    }
}
