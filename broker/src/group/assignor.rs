//! Client-side partition assignors, as Kafka's consumers run them in the group leader.
//!
//! In the classic protocol the broker only relays: the leader member computes the assignment and
//! sends it in SyncGroup. These are the two standard strategies, used by Eddy's own consumer.

use std::collections::BTreeMap;

/// `range`: per topic, consecutive partitions split evenly among the members subscribed to it,
/// the first members taking one extra when it does not divide.
pub fn range(
    members: &[(String, Vec<String>)],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<(String, i32)>> {
    let mut out: BTreeMap<String, Vec<(String, i32)>> = members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect();
    for (topic, count) in partitions_per_topic {
        let mut subscribed: Vec<&String> = members
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subscribed.sort();
        if subscribed.is_empty() {
            continue;
        }
        let per = *count as usize / subscribed.len();
        let extra = *count as usize % subscribed.len();
        let mut next = 0i32;
        for (i, member) in subscribed.iter().enumerate() {
            let take = per + usize::from(i < extra);
            for _ in 0..take {
                out.get_mut(*member)
                    .expect("member listed")
                    .push((topic.clone(), next));
                next += 1;
            }
        }
    }
    out
}

/// `roundrobin`: all partitions of all topics, in order, dealt to members one by one (skipping
/// members not subscribed to a partition's topic).
pub fn round_robin(
    members: &[(String, Vec<String>)],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<(String, i32)>> {
    let mut sorted: Vec<&(String, Vec<String>)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: BTreeMap<String, Vec<(String, i32)>> = members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect();
    let mut turn = 0usize;
    for (topic, count) in partitions_per_topic {
        for partition in 0..*count {
            for _ in 0..sorted.len() {
                let (member, topics) = sorted[turn % sorted.len()];
                turn += 1;
                if topics.contains(topic) {
                    out.get_mut(member)
                        .expect("listed")
                        .push((topic.clone(), partition));
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Vec<(String, Vec<String>)>, BTreeMap<String, i32>) {
        let members = vec![
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string()]),
        ];
        (members, BTreeMap::from([("t".to_string(), 5)]))
    }

    #[test]
    fn range_gives_consecutive_blocks_first_members_larger() {
        let (members, topics) = setup();
        let a = range(&members, &topics);
        assert_eq!(
            a["a"],
            vec![("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]
        );
        assert_eq!(a["b"], vec![("t".into(), 3), ("t".into(), 4)]);
    }

    #[test]
    fn round_robin_alternates() {
        let (members, topics) = setup();
        let a = round_robin(&members, &topics);
        assert_eq!(
            a["a"],
            vec![("t".into(), 0), ("t".into(), 2), ("t".into(), 4)]
        );
        assert_eq!(a["b"], vec![("t".into(), 1), ("t".into(), 3)]);
    }
}
