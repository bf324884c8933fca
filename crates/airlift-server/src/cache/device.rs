//! What the device cache keeps of a device: only what the device routes
//! read between two changes of the device.
//!
//! A check-in takes the device's type, attributes, installed software and
//! security version from the inventory it reports — the device is the
//! truth — so none of the stored inventory is kept: only its digest, which
//! says whether the report changed and must be written. Target matching
//! ([`crate::rollout::DeviceView`]), the shadow's group documents
//! ([`airlift_protocol::target_expr::DeviceFacts`]) and the authentication
//! of every device route need, besides, the device's admission status and
//! its tags. Its identity, public key and times are never read there.
//!
//! Tags repeat across a fleet (a thousand devices tagged `lab`), so a
//! device's tag set is shared with every other device carrying the same
//! set ([`TagSets`]).

use airlift_protocol::state::DeviceStatus;
use airlift_protocol::DeviceId;
use airlift_store::DeviceSummary;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A device as the device routes need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDevice {
    /// The device.
    pub id: DeviceId,
    /// Whether it is accepted (every device route asks).
    pub status: DeviceStatus,
    /// Its tags, shared with the devices carrying the same set.
    pub tags: Arc<[String]>,
    /// [`airlift_store::inventory_digest`] of the inventory last stored;
    /// `None` before the first check-in.
    pub inventory_sha256: Option<[u8; 32]>,
    /// Its weight in the cache, worked out once ([`ByRecords`]).
    weight: u32,
}

/// Bytes one device is budgeted in the cache: a device whose entry, tags
/// included, fits weighs one record; one with more tags weighs as several,
/// so that `--device-cache-capacity` records never take more than that
/// many budgets, whatever their tags.
pub const RECORD_BUDGET_BYTES: u64 = 256;

impl CachedDevice {
    /// What is kept of a stored device, its tags shared through `tag_sets`.
    pub fn new(stored: impl Into<DeviceSummary>, tag_sets: &TagSets) -> Self {
        let stored = stored.into();
        let tags = tag_sets.share(stored.tags);
        let bytes = Self::bytes_for(&tags);
        Self {
            id: stored.id,
            status: stored.status,
            tags,
            inventory_sha256: stored.inventory_sha256,
            weight: u32::try_from(bytes.div_ceil(RECORD_BUDGET_BYTES).max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Bytes the entry holds, counting its tag set as its own (it may be
    /// shared, which only makes the figure an upper bound).
    pub fn bytes(&self) -> u64 {
        Self::bytes_for(&self.tags)
    }

    fn bytes_for(tags: &[String]) -> u64 {
        let inline = std::mem::size_of::<Self>();
        inline as u64 + tag_set_bytes(tags)
    }
}

/// Heap bytes of a tag set in an `Arc<[String]>`: the two counts, the
/// strings' headers, their text.
fn tag_set_bytes(tags: &[String]) -> u64 {
    let counts = 2 * std::mem::size_of::<usize>();
    let headers = std::mem::size_of_val(tags);
    let text: usize = tags.iter().map(String::capacity).sum();
    (counts + headers + text) as u64
}

/// Weighs a cached device in records ([`RECORD_BUDGET_BYTES`] each).
#[derive(Debug, Clone, Copy, Default)]
pub struct ByRecords;

impl quick_cache::Weighter<DeviceId, CachedDevice> for ByRecords {
    fn weight(&self, _id: &DeviceId, device: &CachedDevice) -> u64 {
        u64::from(device.weight)
    }
}

/// Most bytes of distinct tag sets held for sharing; past it the table
/// starts afresh (the sets already handed out live on in their entries,
/// only sharing with newcomers restarts).
const MAX_SHARED_TAG_BYTES: u64 = 1 << 20;

/// Tag sets handed out, so that devices with the same tags share one.
#[derive(Debug, Default)]
pub struct TagSets {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    sets: HashSet<Arc<[String]>>,
    bytes: u64,
}

impl TagSets {
    /// The shared copy of `tags`, sorted (their order means nothing, and
    /// sorted sets share whatever order the store gave).
    pub fn share(&self, mut tags: Vec<String>) -> Arc<[String]> {
        tags.sort_unstable();
        let Ok(mut held) = self.held.lock() else {
            // A panic elsewhere poisoned the table: go without sharing.
            return Arc::from(tags);
        };
        if let Some(shared) = held.sets.get(tags.as_slice()) {
            return Arc::clone(shared);
        }
        let set: Arc<[String]> = Arc::from(tags);
        let bytes = tag_set_bytes(&set);
        if held.bytes + bytes > MAX_SHARED_TAG_BYTES {
            held.sets.clear();
            held.bytes = 0;
        }
        held.bytes += bytes;
        held.sets.insert(Arc::clone(&set));
        set
    }

    /// Bytes of the tag sets held for sharing.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.held.lock().map(|h| h.bytes).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheLimits, Caches};
    use airlift_protocol::management::Device;
    use airlift_store::{DeviceRecord, StoreEvent};
    use chrono::Utc;
    use std::collections::BTreeMap;

    /// A device as the simulator's fleet makes it (`airlift-sim`'s
    /// `device.rs`): a serial, an Ed25519 key in PEM, one tag, the factory
    /// rootfs, a region and the booted slot.
    fn simulated(index: usize, tags: &[&str]) -> DeviceRecord {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        DeviceRecord {
            device: Device {
                id: DeviceId::new(),
                status: DeviceStatus::Accepted,
                identity: map(&[("serial", &format!("sim-{index:05}"))]),
                public_key: format!(
                    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA{:044}\n-----END PUBLIC KEY-----\n",
                    index
                ),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                device_type: Some("sim-board".into()),
                hardware_revision: None,
                installed: map(&[("rootfs", "1.0.0")]),
                security_version: 0,
                attributes: map(&[("booted_slot", "a"), ("region", "eu")]),
                created_at: Utc::now(),
                last_check_in: Some(Utc::now()),
            },
            inventory_sha256: Some([7; 32]),
        }
    }

    /// Heap and inline bytes of a whole record behind an `Arc`, as the
    /// cache held it before: every string's buffer, and a B-tree leaf
    /// (eleven keys and values, allocated in full) per map of up to eleven
    /// entries.
    fn whole_record_bytes(record: &DeviceRecord) -> u64 {
        const LEAF_CAPACITY: usize = 11;
        let leaf =
            2 * std::mem::size_of::<usize>() + 2 * LEAF_CAPACITY * std::mem::size_of::<String>();
        let map = |m: &BTreeMap<String, String>| -> usize {
            m.len().div_ceil(LEAF_CAPACITY) * leaf
                + m.iter()
                    .map(|(k, v)| k.capacity() + v.capacity())
                    .sum::<usize>()
        };
        let device = &record.device;
        let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<DeviceRecord>();
        let tags = std::mem::size_of::<String>() * device.tags.capacity()
            + device.tags.iter().map(String::capacity).sum::<usize>();
        let strings = device.public_key.capacity()
            + device.device_type.as_ref().map_or(0, String::capacity)
            + device
                .hardware_revision
                .as_ref()
                .map_or(0, String::capacity);
        (arc + tags
            + strings
            + map(&device.identity)
            + map(&device.installed)
            + map(&device.attributes)) as u64
    }

    /// The cache's own bytes per entry (its slab and hash table), with
    /// `entries` values of `make` in it.
    fn bookkeeping_per_entry<V: Clone>(entries: usize, make: impl Fn(usize) -> V) -> u64 {
        let cache: quick_cache::sync::Cache<DeviceId, V> = quick_cache::sync::Cache::new(entries);
        for n in 0..entries {
            cache.insert(DeviceId::new(), make(n));
        }
        (cache.memory_used().total() / cache.len().max(1)) as u64
    }

    #[test]
    fn a_typical_device_costs_a_fraction_of_its_whole_record() {
        let tag_sets = TagSets::default();
        let record = simulated(42, &["sim"]);
        let before = whole_record_bytes(&record);
        let kept = CachedDevice::new(record.clone(), &tag_sets);
        assert_eq!(kept.weight, 1, "a typical device weighs one record");
        assert!(kept.bytes() <= RECORD_BUDGET_BYTES, "{}", kept.bytes());

        // What a million cost, the cache's slab and table included. Before:
        // an `Arc` per entry, the record behind it. After: the entry in the
        // slab, its tag set shared with the fleet's.
        const SAMPLE: usize = 20_000;
        let whole = Arc::new(record);
        let slab_before = bookkeeping_per_entry(SAMPLE, |_| Arc::clone(&whole));
        let slab_after = bookkeeping_per_entry(SAMPLE, |_| kept.clone());
        let per_device_before = slab_before + before;
        let per_device_after = slab_after;
        let mib_per_million = |bytes: u64| bytes as f64 * 1e6 / f64::from(1 << 20);
        eprintln!(
            "device cache, a simulated device: before {per_device_before} bytes \
             ({slab_before} in the cache's slab and table, {before} the record), \
             {:.0} MiB a million; after {per_device_after} bytes ({} the entry, \
             its tags shared; {} with a tag set of its own), {:.0} MiB a million",
            mib_per_million(per_device_before),
            std::mem::size_of::<CachedDevice>(),
            slab_after + kept.bytes() - std::mem::size_of::<CachedDevice>() as u64,
            mib_per_million(per_device_after),
        );
        assert!(
            per_device_after * 5 < per_device_before,
            "after {per_device_after} bytes, before {per_device_before}"
        );
        assert!(mib_per_million(per_device_after) < 200.0);
    }

    #[test]
    fn devices_with_the_same_tags_share_one_set() {
        let tag_sets = TagSets::default();
        let a = CachedDevice::new(simulated(1, &["lab", "eu"]), &tag_sets);
        let b = CachedDevice::new(simulated(2, &["eu", "lab"]), &tag_sets);
        let c = CachedDevice::new(simulated(3, &["lab"]), &tag_sets);
        assert!(Arc::ptr_eq(&a.tags, &b.tags), "{:?} {:?}", a.tags, b.tags);
        assert!(!Arc::ptr_eq(&a.tags, &c.tags));
        assert_eq!(&*a.tags, ["eu".to_owned(), "lab".to_owned()]);
    }

    #[test]
    fn the_shared_tag_sets_stay_within_their_bound() {
        let tag_sets = TagSets::default();
        for n in 0..20_000 {
            let tags = vec![format!("tag-{n:058}")];
            let shared = tag_sets.share(tags.clone());
            assert_eq!(*shared, *tags, "a set handed out is the set asked for");
            assert!(tag_sets.bytes() <= MAX_SHARED_TAG_BYTES);
        }
    }

    #[test]
    fn a_device_with_many_tags_weighs_as_several() {
        let many: Vec<String> = (0..64).map(|n| format!("{n:064}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let heavy = CachedDevice::new(simulated(1, &many), &TagSets::default());
        let weight = u64::from(heavy.weight);
        assert_eq!(weight, heavy.bytes().div_ceil(RECORD_BUDGET_BYTES));
        assert!(weight > 10, "{weight}");

        // A cache of 1000 records holds far fewer such devices: its weight,
        // not its count, is bounded.
        let caches = Caches::new(CacheLimits {
            devices: 1000,
            final_states: 10,
        });
        caches.apply(StoreEvent::Listening);
        for n in 0..1000 {
            let epoch = caches.epoch().expect("epoch");
            let device = CachedDevice::new(simulated(n, &many), &caches.tag_sets);
            caches.keep_device(epoch, device).expect("kept");
        }
        let derived = caches.derived.read().expect("lock");
        assert!(
            derived.devices.weight() <= 1000,
            "{}",
            derived.devices.weight()
        );
        let held = derived.devices.len() as u64;
        assert!(held > 0 && held <= 1000 / weight + 1, "{held} held");
    }
}
