//! `age-plugin-teekms`: found by `age` on the PATH for `age1teekms1…` recipients and
//! `AGE-PLUGIN-TEEKMS-1…` identities (spec/age-plugin-v1.md). Encrypting seals the file
//! key to the recipient's age key, with no node; decrypting asks the node the identity
//! names, which checks the key's policy and state and records the request.

use std::collections::{HashMap, HashSet};
use std::io;

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use age_plugin::identity::{self, IdentityPluginV1};
use age_plugin::recipient::{self, RecipientPluginV1};
use age_plugin::{Callbacks, PluginHandler, run_state_machine};
use base64::Engine;
use teekms_age::{Identity, Recipient, STANZA_TAG, stanza_args};
use teekms_core::KeyId;

struct Handler;

impl PluginHandler for Handler {
    type RecipientV1 = Wrap;
    type IdentityV1 = Unwrap;

    fn recipient_v1(self) -> io::Result<Wrap> {
        Ok(Wrap(Vec::new()))
    }

    fn identity_v1(self) -> io::Result<Unwrap> {
        Ok(Unwrap(Vec::new()))
    }
}

/// Encrypting: the recipients given.
struct Wrap(Vec<Recipient>);

impl RecipientPluginV1 for Wrap {
    fn add_recipient(
        &mut self,
        index: usize,
        _plugin: &str,
        bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        let r = Recipient::from_bytes(bytes).ok_or_else(|| recipient::Error::Recipient {
            index,
            message: "not a teekms recipient of this format; make one with `teekms age recipient`"
                .into(),
        })?;
        self.0.push(r);
        Ok(())
    }

    fn add_identity(
        &mut self,
        index: usize,
        _plugin: &str,
        _bytes: &[u8],
    ) -> Result<(), recipient::Error> {
        Err(recipient::Error::Identity {
            index,
            message: "a teekms identity cannot encrypt: encrypt to the key's recipient (`teekms age recipient`)".into(),
        })
    }

    fn labels(&mut self) -> HashSet<String> {
        HashSet::new()
    }

    fn wrap_file_keys(
        &mut self,
        file_keys: Vec<FileKey>,
        _callbacks: impl Callbacks<recipient::Error>,
    ) -> io::Result<Result<Vec<Vec<Stanza>>, Vec<recipient::Error>>> {
        let mut out = Vec::with_capacity(file_keys.len());
        for file_key in &file_keys {
            let mut stanzas = Vec::with_capacity(self.0.len());
            for (index, r) in self.0.iter().enumerate() {
                let key_id = KeyId::new(&r.key_id).expect("checked when parsed");
                let aad = teekms_core::age::seal_aad(&r.owner, &key_id, r.key_version);
                let sealed = teekms_core::hpke::seal(
                    &r.public_key,
                    teekms_core::age::HPKE_INFO,
                    &aad,
                    file_key.expose_secret(),
                );
                match sealed {
                    Ok((enc, ct)) => stanzas.push(Stanza {
                        tag: STANZA_TAG.into(),
                        args: stanza_args(r, &enc),
                        body: ct,
                    }),
                    Err(_) => {
                        return Ok(Err(vec![recipient::Error::Recipient {
                            index,
                            message: "its public key is not an X25519 key".into(),
                        }]));
                    }
                }
            }
            out.push(stanzas);
        }
        Ok(Ok(out))
    }
}

/// Decrypting: the identities given.
struct Unwrap(Vec<Identity>);

impl IdentityPluginV1 for Unwrap {
    fn add_identity(
        &mut self,
        index: usize,
        _plugin: &str,
        bytes: &[u8],
    ) -> Result<(), identity::Error> {
        let i = Identity::from_bytes(bytes).ok_or_else(|| identity::Error::Identity {
            index,
            message: "not a teekms identity of this format; make one with `teekms age identity`"
                .into(),
        })?;
        self.0.push(i);
        Ok(())
    }

    fn unwrap_file_keys(
        &mut self,
        files: Vec<Vec<Stanza>>,
        _callbacks: impl Callbacks<identity::Error>,
    ) -> io::Result<HashMap<usize, Result<FileKey, Vec<identity::Error>>>> {
        let mut out = HashMap::new();
        for (file_index, stanzas) in files.iter().enumerate() {
            let mut errors = Vec::new();
            'stanzas: for (stanza_index, s) in stanzas.iter().enumerate() {
                if s.tag != STANZA_TAG {
                    continue;
                }
                let bad = |message: &str| identity::Error::Stanza {
                    file_index,
                    stanza_index,
                    message: message.into(),
                };
                let [owner, key_id, version, enc] = s.args.as_slice() else {
                    errors.push(bad("a teekms stanza has four arguments"));
                    continue;
                };
                let (Ok(version), Ok(enc)) = (
                    version.parse::<u64>(),
                    base64::engine::general_purpose::STANDARD_NO_PAD.decode(enc),
                ) else {
                    errors.push(bad("a teekms stanza's version or key share is malformed"));
                    continue;
                };
                for (index, identity) in self.0.iter().enumerate() {
                    match teekms_age::node::unwrap(identity, owner, key_id, version, &enc, &s.body)
                    {
                        Ok(key) => match <[u8; 16]>::try_from(key.as_slice()) {
                            Ok(k) => {
                                out.insert(file_index, Ok(FileKey::new(Box::new(k))));
                                errors.clear();
                                break 'stanzas;
                            }
                            Err(_) => {
                                errors.push(bad("the node returned a file key of the wrong size"))
                            }
                        },
                        Err(message) => errors.push(identity::Error::Identity {
                            index,
                            message: format!("key {key_id:?} version {version}: {message}"),
                        }),
                    }
                }
            }
            if !errors.is_empty() {
                out.insert(file_index, Err(errors));
            }
        }
        Ok(out)
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    match args
        .next()
        .as_deref()
        .and_then(|a| a.strip_prefix("--age-plugin="))
    {
        Some(state_machine) => run_state_machine(state_machine, Handler),
        None => {
            eprintln!(
                "age-plugin-teekms is run by age (age -r age1teekms1… / age -d -i identity.txt); make recipients and identities with `teekms age recipient` and `teekms age identity`"
            );
            std::process::exit(2);
        }
    }
}
