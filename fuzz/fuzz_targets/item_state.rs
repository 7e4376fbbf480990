//! Proves that the item-state decoder (peers send item states, and the store reads them back)
//! never panics, and that what it accepts re-encodes to a state that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorumdb_core::causality::ItemState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = ItemState::decode(data) {
        let again = ItemState::decode(&state.encode()).expect("an encoded state decodes");
        assert_eq!(again, state, "encode then decode changed the state");
    }
});
