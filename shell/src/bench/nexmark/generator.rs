//! Nexmark's event generator, following the reference generator's rules (shared/nexmark.md):
//! persons, auctions and bids interleaved 1:3:46 by event id, dense ids from 1000, hot
//! auctions, bidders and sellers, log-uniform prices, padding up to each kind's average size,
//! and event times `base + n * inter-event delay`, optionally permuted within groups.
//!
//! Every event is a pure function of (seed, event id): each draws from its own random stream,
//! so any range of ids can be generated on its own and tests can recompute any prefix.

use std::fmt::Write;

/// The shape of the stream.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) seed: u64,
    /// Events per second of event time (the reference's first_event_rate).
    pub(crate) rate: u64,
    /// Event time of event 0, in epoch milliseconds.
    pub(crate) base_time_ms: i64,
    /// When above 1, event times are shuffled within consecutive groups of this many events.
    pub(crate) out_of_order_group_size: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            seed: 0,
            rate: 10_000,
            // 2026-01-01T00:00:00Z
            base_time_ms: 1_767_225_600_000,
            out_of_order_group_size: 1,
        }
    }
}

const PERSON_PROPORTION: u64 = 1;
const AUCTION_PROPORTION: u64 = 3;
const TOTAL_PROPORTION: u64 = 50;
const FIRST_PERSON_ID: u64 = 1000;
const FIRST_AUCTION_ID: u64 = 1000;
const FIRST_CATEGORY_ID: u64 = 10;
const NUM_CATEGORIES: u64 = 5;
const NUM_IN_FLIGHT_AUCTIONS: u64 = 100;
const NUM_ACTIVE_PEOPLE: u64 = 1000;
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;
/// Hot ids are the last id rounded down to a multiple of this.
const HOT_ROUNDING: u64 = 100;
/// One in this many bids goes to a random auction; the rest to the hot one.
const HOT_AUCTION_RATIO: u64 = 2;
/// One in this many bids (and auctions) comes from a random person; the rest from a hot one.
const HOT_BIDDER_RATIO: u64 = 4;
const HOT_SELLER_RATIO: u64 = 4;
const PERSON_AVG_BYTES: usize = 200;
const AUCTION_AVG_BYTES: usize = 500;
const BID_AVG_BYTES: usize = 100;
const CHANNELS: u64 = 10_000;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Which of the three streams an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Person,
    Auction,
    Bid,
}

impl Kind {
    pub(crate) fn of(event_id: u64) -> Kind {
        match event_id % TOTAL_PROPORTION {
            offset if offset < PERSON_PROPORTION => Kind::Person,
            offset if offset < PERSON_PROPORTION + AUCTION_PROPORTION => Kind::Auction,
            _ => Kind::Bid,
        }
    }
}

/// One event: its kind, event time and JSON value.
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) time_ms: i64,
    pub(crate) json: String,
}

/// Generates events by id.
pub(crate) struct Generator {
    config: Config,
    /// Microseconds of event time between consecutive events.
    inter_event_us: f64,
}

impl Generator {
    pub(crate) fn new(config: Config) -> Generator {
        let inter_event_us = 1e6 / config.rate.max(1) as f64;
        Generator {
            config,
            inter_event_us,
        }
    }

    /// The event with id `n` (ids start at 0).
    pub(crate) fn event(&self, n: u64) -> Event {
        let mut random = Random::new(self.config.seed, n);
        let time_ms = self.event_time(n);
        let kind = Kind::of(n);
        let json = match kind {
            Kind::Person => self.person(n, time_ms, &mut random),
            Kind::Auction => self.auction(n, time_ms, &mut random),
            Kind::Bid => self.bid(n, time_ms, &mut random),
        };
        Event {
            kind,
            time_ms,
            json,
        }
    }

    /// Event time of event `n`: in order, or permuted within its group.
    fn event_time(&self, n: u64) -> i64 {
        let group = self.config.out_of_order_group_size;
        let position = if group > 1 {
            let start = n - n % group;
            start + permuted(self.config.seed, start, group, n - start)
        } else {
            n
        };
        self.time_of_position(position)
    }

    fn time_of_position(&self, position: u64) -> i64 {
        self.config.base_time_ms + (position as f64 * self.inter_event_us / 1000.0) as i64
    }

    fn person(&self, n: u64, time_ms: i64, random: &mut Random) -> String {
        let id = last_base0_person_id(n) + FIRST_PERSON_ID;
        let name = format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES));
        let email = format!("{}@{}.com", random.string(7), random.string(5));
        let credit_card = (0..4)
            .map(|_| format!("{:04}", random.below(10_000)))
            .collect::<Vec<_>>()
            .join(" ");
        let city = random.pick(&US_CITIES);
        let state = random.pick(&US_STATES);
        let mut json = format!(
            r#"{{"id":{id},"name":"{name}","email_address":"{email}","credit_card":"{credit_card}","city":"{city}","state":"{state}","date_time":{time_ms},"extra":""#
        );
        random.pad(&mut json, PERSON_AVG_BYTES);
        json.push_str("\"}");
        json
    }

    fn auction(&self, n: u64, time_ms: i64, random: &mut Random) -> String {
        let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
        let seller = if random.below(HOT_SELLER_RATIO) > 0 {
            last_base0_person_id(n) / HOT_ROUNDING * HOT_ROUNDING
        } else {
            next_base0_person_id(n, random)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + random.below(NUM_CATEGORIES);
        let initial_bid = random.price();
        let reserve = initial_bid + random.price();
        let expires = time_ms + self.auction_length_ms(n, time_ms, random);
        let item_name = random.string(20);
        let description = random.string(100);
        let mut json = format!(
            r#"{{"id":{id},"item_name":"{item_name}","description":"{description}","initial_bid":{initial_bid},"reserve":{reserve},"date_time":{time_ms},"expires":{expires},"seller":{seller},"category":{category},"extra":""#
        );
        random.pad(&mut json, AUCTION_AVG_BYTES);
        json.push_str("\"}");
        json
    }

    /// Uniform in [1, 2H] where H is the event time until about NUM_IN_FLIGHT_AUCTIONS more
    /// auctions exist, so about that many are open at once.
    fn auction_length_ms(&self, n: u64, time_ms: i64, random: &mut Random) -> i64 {
        let events_for_auctions = NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let horizon = self.time_of_position(n + events_for_auctions) - time_ms;
        1 + random.below((horizon * 2).max(1) as u64) as i64
    }

    fn bid(&self, n: u64, time_ms: i64, random: &mut Random) -> String {
        let auction = if random.below(HOT_AUCTION_RATIO) > 0 {
            last_base0_auction_id(n) / HOT_ROUNDING * HOT_ROUNDING
        } else {
            next_base0_auction_id(n, random)
        } + FIRST_AUCTION_ID;
        // Not the reference's quirk of adding FIRST_PERSON_ID twice: bidders are person ids.
        let bidder = if random.below(HOT_BIDDER_RATIO) > 0 {
            last_base0_person_id(n) / HOT_ROUNDING * HOT_ROUNDING + 1
        } else {
            next_base0_person_id(n, random)
        } + FIRST_PERSON_ID;
        let price = random.price();
        let (channel, url) = if random.below(2) > 0 {
            let hot = random.below(HOT_CHANNELS.len() as u64) as usize;
            let channel = HOT_CHANNELS[hot].to_string();
            (
                channel,
                channel_url(self.config.seed, 1_000_000 + hot as u64),
            )
        } else {
            let index = random.below(CHANNELS);
            (
                format!("channel-{index}"),
                channel_url(self.config.seed, index),
            )
        };
        let mut json = format!(
            r#"{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"{url}","date_time":{time_ms},"extra":""#
        );
        random.pad(&mut json, BID_AVG_BYTES);
        json.push_str("\"}");
        json
    }
}

/// The base-0 id of the newest person at event `n`.
fn last_base0_person_id(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = (n % TOTAL_PROPORTION).min(PERSON_PROPORTION - 1);
    epoch * PERSON_PROPORTION + offset
}

/// The base-0 id of the newest auction at event `n` (0 before the first).
fn last_base0_auction_id(n: u64) -> u64 {
    let epoch = n / TOTAL_PROPORTION;
    let offset = n % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        // Before this epoch's auctions: the last one of the previous epoch.
        (epoch * AUCTION_PROPORTION).saturating_sub(1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
    } else {
        epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
    }
}

/// A random active person, possibly one a little ahead of the newest.
fn next_base0_person_id(n: u64, random: &mut Random) -> u64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + random.below(active + PERSON_ID_LEAD)
}

/// A random in-flight auction, possibly one a little ahead of the newest.
fn next_base0_auction_id(n: u64, random: &mut Random) -> u64 {
    let max = last_base0_auction_id(n);
    let min = max.saturating_sub(NUM_IN_FLIGHT_AUCTIONS);
    min + random.below(max - min + 1 + AUCTION_ID_LEAD)
}

/// A channel's URL: three random directories, and for 9 in 10 channels a channel_id.
fn channel_url(seed: u64, index: u64) -> String {
    let mut random = Random::new(seed ^ 0x5bd1_e995, index);
    let mut url = format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        random.string(5),
        random.string(5),
        random.string(5)
    );
    if random.below(10) > 0 {
        let _ = write!(url, "&channel_id={index}");
    }
    url
}

/// Position `i` of a seeded permutation of `0..size` (the group starting at `start`).
fn permuted(seed: u64, start: u64, size: u64, i: u64) -> u64 {
    let mut random = Random::new(seed ^ 0x9e37_79b9, start);
    let mut order: Vec<u64> = (0..size).collect();
    for j in (1..size as usize).rev() {
        order.swap(j, random.below(j as u64 + 1) as usize);
    }
    order[i as usize]
}

/// SplitMix64: small, fast, and seeded per event, so events are independent of each other.
struct Random(u64);

impl Random {
    fn new(seed: u64, stream: u64) -> Random {
        let mut random = Random(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        random.next();
        random
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    fn below(&mut self, bound: u64) -> u64 {
        ((self.next() as u128 * bound as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len() as u64) as usize]
    }

    /// Log-uniform cents from 100 to 10^8.
    fn price(&mut self) -> u64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as u64
    }

    /// Lower-case letters.
    fn string(&mut self, length: usize) -> String {
        (0..length)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }

    /// Appends letters to bring `json` (so far) to about `average` bytes: the target varies by
    /// +-20% around the average.
    fn pad(&mut self, json: &mut String, average: usize) {
        let Some(wanted) = average.checked_sub(json.len() + 2) else {
            return;
        };
        let delta = wanted / 5;
        let length = wanted - delta + self.below(2 * delta as u64 + 1) as usize;
        for _ in 0..length {
            json.push((b'a' + self.below(26) as u8) as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_1_3_46_proportions_and_ids_are_dense() {
        let generator = Generator::new(Config::default());
        let kinds: Vec<Kind> = (0..5000).map(Kind::of).collect();
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!(
            (count(Kind::Person), count(Kind::Auction), count(Kind::Bid)),
            (100, 300, 4600)
        );
        let ids = |kind| -> Vec<u64> {
            (0..5000)
                .filter(|&n| Kind::of(n) == kind)
                .map(|n| {
                    let json: serde_json::Value =
                        serde_json::from_str(&generator.event(n).json).unwrap();
                    json["id"].as_u64().unwrap()
                })
                .collect()
        };
        assert_eq!(ids(Kind::Person), (1000..1100).collect::<Vec<_>>());
        assert_eq!(ids(Kind::Auction), (1000..1300).collect::<Vec<_>>());
    }

    #[test]
    fn events_are_deterministic_valid_json_near_their_average_size() {
        let a = Generator::new(Config::default());
        let b = Generator::new(Config::default());
        let other = Generator::new(Config {
            seed: 7,
            ..Config::default()
        });
        let (mut auction_bytes, mut auctions, mut bids, mut hot) = (0, 0, 0, 0);
        for n in 0..10_000 {
            let (x, y) = (a.event(n), b.event(n));
            assert_eq!(x.json, y.json);
            let value: serde_json::Value = serde_json::from_str(&x.json).unwrap();
            assert_eq!(value["date_time"], x.time_ms);
            if x.kind == Kind::Auction {
                auction_bytes += x.json.len();
                auctions += 1;
            }
            if x.kind == Kind::Bid {
                bids += 1;
                let price = value["price"].as_u64().unwrap();
                assert!((100..=100_000_000).contains(&price), "{price}");
                hot += (value["auction"].as_u64().unwrap() % 100 == 0) as usize;
            }
        }
        assert_ne!(a.event(10).json, other.event(10).json, "the seed matters");
        // Padding brings auctions to their average; a bid's JSON (with its URL) is longer
        // than the reference's 100 bytes already, so bids get no padding.
        let average = auction_bytes / auctions;
        assert!(
            (450..=550).contains(&average),
            "average auction {average} bytes"
        );
        // Half the bids go to the hot auction, plus the random ones that land on it.
        assert!(
            hot * 100 / bids >= 50,
            "{hot} of {bids} bids on hot auctions"
        );
    }

    #[test]
    fn times_advance_with_the_rate_and_out_of_order_groups_permute_them() {
        let generator = Generator::new(Config::default());
        assert_eq!(generator.event(10).time_ms - generator.event(0).time_ms, 1);
        let shuffled = Generator::new(Config {
            out_of_order_group_size: 100,
            ..Config::default()
        });
        let mut times: Vec<i64> = (0..100).map(|n| shuffled.event(n).time_ms).collect();
        let in_order: Vec<i64> = (0..100).map(|n| generator.event(n).time_ms).collect();
        assert_ne!(times, in_order);
        times.sort();
        assert_eq!(times, in_order);
    }
}
