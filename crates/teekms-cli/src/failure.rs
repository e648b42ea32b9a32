//! Errors of the command line: what went wrong, what to do, and the exit code.

use std::fmt;

/// Exit code: accepted / done.
pub const EXIT_OK: u8 = 0;
/// Exit code: rejected or refused (evidence, policy, the node said no, tampering).
pub const EXIT_REJECTED: u8 = 1;
/// Exit code: usage, configuration or I/O error.
pub const EXIT_USAGE: u8 = 2;

/// A failure to report to the user.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
            hint: None,
        }
    }

    pub fn rejected(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_REJECTED,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<teekms_client::ClientError> for Failure {
    fn from(e: teekms_client::ClientError) -> Self {
        use teekms_client::ClientError as C;
        let hint = match &e {
            C::Rejected(_) => Some(
                "check that the policy pins this node's TEE, root and measurement; `teekms attest fetch` and `teekms attest verify --json` show what the node presents",
            ),
            C::ChannelMismatch => {
                Some("do not send keys over this connection; check the network path to the node")
            }
            C::Connect { .. } => {
                Some("check that the node is running and the URL is https://HOST:PORT")
            }
            C::Api { code, .. } if code == "conflict" => {
                Some("a deployed key is never replaced; deploy the new material under a new key id")
            }
            C::Api { code, .. } if code == "wrong_node" => Some(
                "wrap the key again with `teekms key wrap --evidence` using this node's attestation",
            ),
            C::Api { code, .. } if code == "unauthenticated" || code == "forbidden" => {
                Some("use the owner key the keys were deployed with (--owner or TEEKMS_OWNER)")
            }
            _ => None,
        };
        let code = if e.is_rejection() {
            EXIT_REJECTED
        } else {
            EXIT_USAGE
        };
        Failure {
            code,
            message: e.to_string(),
            hint: hint.map(str::to_owned),
        }
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;
