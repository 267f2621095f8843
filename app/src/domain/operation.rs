//! Operations on a YubiKey: the state of one operation row (`pending` until
//! the agent's result is reported), and reading the protocol's names
//! ([`Operation`], [`PivSlot`]) back from text columns.

use std::fmt;
use std::str::FromStr;

use kleidia_protocol::agent::{PivSlot, UnknownSlot};
use kleidia_protocol::ticket::Operation;
use serde::{Deserialize, Serialize};

/// Where an operation stands; the `operations.state` text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[derive(utoipa::ToSchema)]
pub enum OperationState {
    /// Authorised; the agent's result has not been reported yet.
    Pending,
    Succeeded,
    Failed,
    /// Closed by Kleidia: a non-secret operation whose ticket expired with no
    /// result. The agent refuses an expired ticket, so nothing more happens
    /// under it; whether the card applied the command before its answer was
    /// lost is not known (`error` = `outcome_unknown`).
    Expired,
}

/// A name that is not one of the [`OperationState`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation state {0:?}")]
pub struct UnknownOperationState(pub String);

impl OperationState {
    pub const ALL: [OperationState; 4] = [
        OperationState::Pending,
        OperationState::Succeeded,
        OperationState::Failed,
        OperationState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::Pending => "pending",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
            OperationState::Expired => "expired",
        }
    }

    /// The final state an agent's report moves an operation to.
    pub fn reported(success: bool) -> Self {
        if success {
            OperationState::Succeeded
        } else {
            OperationState::Failed
        }
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OperationState {
    type Err = UnknownOperationState;
    fn from_str(s: &str) -> Result<Self, UnknownOperationState> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownOperationState(s.to_string()))
    }
}

/// A name that is not one of the protocol's [`Operation`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?}")]
pub struct UnknownOperation(pub String);

/// The operation a name (`set_pin`, …) stands for.
pub fn parse_operation(s: &str) -> Result<Operation, UnknownOperation> {
    Operation::ALL
        .into_iter()
        .find(|op| op.as_str() == s)
        .ok_or_else(|| UnknownOperation(s.to_string()))
}

/// A text column holding one of the protocol's names (`operations.kind`,
/// `certificates.slot`): rows read it with `#[sqlx(try_from = "ProtocolName")]`
/// into the protocol's type, which cannot implement `sqlx::Type` itself.
#[derive(Debug, Clone, sqlx::Type)]
#[sqlx(transparent)]
pub struct ProtocolName(String);

impl TryFrom<ProtocolName> for Operation {
    type Error = UnknownOperation;
    fn try_from(n: ProtocolName) -> Result<Self, UnknownOperation> {
        parse_operation(&n.0)
    }
}

impl TryFrom<ProtocolName> for PivSlot {
    type Error = UnknownSlot;
    fn try_from(n: ProtocolName) -> Result<Self, UnknownSlot> {
        n.0.parse()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn operation_states_and_names_read_back_what_they_write() {
        for s in OperationState::ALL {
            assert_eq!(s.as_str().parse::<OperationState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(OperationState::reported(true), OperationState::Succeeded);
        assert_eq!(OperationState::reported(false), OperationState::Failed);
        assert!("done".parse::<OperationState>().is_err());
        for op in Operation::ALL {
            assert_eq!(parse_operation(op.as_str()), Ok(op));
            assert_eq!(
                Operation::try_from(ProtocolName(op.as_str().into())),
                Ok(op)
            );
        }
        assert!(parse_operation("format").is_err());
        assert_eq!(
            PivSlot::try_from(ProtocolName("9c".into())),
            Ok(PivSlot::Signature)
        );
    }
}
