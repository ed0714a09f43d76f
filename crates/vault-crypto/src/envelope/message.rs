//! The random values of one message: its id and nonce, and with a fresh data key, the key and
//! its wrap nonce, from one kernel draw.

use super::commit::MESSAGE_ID_LEN;
use crate::aead::NONCE_LEN;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::error::Error;
use crate::provider::FreshKey;
use crate::random::SealRandom;
use zeroize::Zeroizing;

/// The random values of one seal: drawn together in one call to the OS CSPRNG.
pub(crate) struct MessageRandom {
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
}

impl MessageRandom {
    /// A seal's values split: a fresh data key with its wrap nonce (for the provider), and the
    /// message id and nonce.
    pub(super) fn with_fresh_key(random: &SealRandom) -> (FreshKey, Self) {
        let (key, rest) = random
            .bytes()
            .split_first_chunk::<DATA_KEY_LEN>()
            .unwrap_or_else(|| unreachable!());
        let (wrap_nonce, rest) = rest
            .split_first_chunk::<NONCE_LEN>()
            .unwrap_or_else(|| unreachable!());
        let (message_id, rest) = rest
            .split_first_chunk::<MESSAGE_ID_LEN>()
            .unwrap_or_else(|| unreachable!());
        let (nonce, _) = rest
            .split_first_chunk::<NONCE_LEN>()
            .unwrap_or_else(|| unreachable!());
        let key = DataKey::from_unwrapped(Zeroizing::new(*key));
        (
            FreshKey::new(key, *wrap_nonce),
            Self {
                message_id: *message_id,
                nonce: *nonce,
            },
        )
    }

    pub(crate) fn generate() -> Result<Self, Error> {
        let mut buf = [0u8; MESSAGE_ID_LEN + NONCE_LEN];
        crate::random::fill(&mut buf)?;
        let (message_id, nonce) = buf.split_at(MESSAGE_ID_LEN);
        Ok(Self {
            message_id: message_id.try_into().map_err(|_| Error::Random)?,
            nonce: nonce.try_into().map_err(|_| Error::Random)?,
        })
    }
}
