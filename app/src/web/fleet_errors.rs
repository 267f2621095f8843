//! How the fleet's errors answer over HTTP: each operation's error enum
//! mapped onto [`AppError`], in one place, so the status of every cause can
//! be read side by side. The messages are the errors' own (`Display`).

use kleidia_protocol::ticket::AgentKeyError;

use crate::domain::{InvalidSerial, UnknownDeviceState};
use crate::error::AppError;
use crate::fleet::access::{LookupError, OperationDenied};
use crate::fleet::agent::{RegisterAgentError, SessionKeyError};
use crate::fleet::approvals::{DecideError, GateError};
use crate::fleet::certificates::{NamesError, RevokeError, SignCsrError};
use crate::fleet::claim::ClaimError;
use crate::fleet::db::devices::InsertDeviceError;
use crate::fleet::details::DetailsError;
use crate::fleet::escrow::EscrowError;
use crate::fleet::offboarding::OffboardError;
use crate::fleet::operations::{AuthorizeError, OwnOperationError, ReissueError, ReportError};
use crate::fleet::pki::PkiError;
use crate::fleet::presence::PresenceError;
use crate::fleet::registry::{AssignError, BadReason, OwnerError, RegisterError, TransitionError};
use crate::fleet::settings::{PolicyError, SavePolicyError};

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow::Error::new(e))
}

impl From<InvalidSerial> for AppError {
    fn from(e: InvalidSerial) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

impl From<crate::fleet::db::devices::BadDeviceFilter> for AppError {
    fn from(e: crate::fleet::db::devices::BadDeviceFilter) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

impl From<UnknownDeviceState> for AppError {
    fn from(e: UnknownDeviceState) -> Self {
        AppError::BadRequest(e.to_string())
    }
}

impl From<BadReason> for AppError {
    fn from(e: BadReason) -> Self {
        AppError::Unprocessable(e.to_string())
    }
}

impl From<LookupError> for AppError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NotFound(_) => AppError::NotFound(e.to_string()),
            LookupError::Db(e) => e.into(),
        }
    }
}

impl From<OperationDenied> for AppError {
    fn from(e: OperationDenied) -> Self {
        if e.is_state_conflict() {
            AppError::Conflict(e.to_string())
        } else {
            AppError::Forbidden(e.to_string())
        }
    }
}

impl From<PolicyError> for AppError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Db(e) => e.into(),
            e @ PolicyError::Corrupt(_) => internal(e),
        }
    }
}

impl From<SavePolicyError> for AppError {
    fn from(e: SavePolicyError) -> Self {
        match e {
            SavePolicyError::Invalid(rule) => AppError::Unprocessable(rule),
            SavePolicyError::Read(e) => e.into(),
            SavePolicyError::Db(e) => e.into(),
            e @ SavePolicyError::Json(_) => internal(e),
        }
    }
}

impl From<EscrowError> for AppError {
    fn from(e: EscrowError) -> Self {
        match e {
            EscrowError::Bao(b) => b.into(),
            EscrowError::Conflict(s) => AppError::Conflict(format!(
                "the escrowed secrets of {s} changed at the same time; nothing was applied, try again"
            )),
            EscrowError::Missing { serial, version } => {
                tracing::error!(%serial, version, "escrow version unreadable");
                AppError::Conflict(format!(
                    "escrow version {version} of {serial} is missing or unreadable: the key's \
                     secrets are lost; wiping it (reset) still works"
                ))
            }
        }
    }
}

impl From<PkiError> for AppError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Bao(b) => b.into(),
            e => internal(e),
        }
    }
}

impl From<OwnerError> for AppError {
    fn from(e: OwnerError) -> Self {
        match e {
            OwnerError::Db(e) => e.into(),
            e => AppError::Unprocessable(e.to_string()),
        }
    }
}

impl From<InsertDeviceError> for AppError {
    fn from(e: InsertDeviceError) -> Self {
        match e {
            InsertDeviceError::Duplicate(_) => AppError::Conflict(e.to_string()),
            InsertDeviceError::Malformed => AppError::Unprocessable(e.to_string()),
            InsertDeviceError::Db(e) => e.into(),
        }
    }
}

impl From<RegisterError> for AppError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::NotYourself | RegisterError::Auditor => {
                AppError::Forbidden(e.to_string())
            }
            RegisterError::NoSerial => AppError::Unprocessable(e.to_string()),
            RegisterError::Claim(e) => e.into(),
            RegisterError::License(e) => e,
            RegisterError::Owner(e) => e.into(),
            RegisterError::Insert(e) => e.into(),
            RegisterError::Db(e) => e.into(),
            RegisterError::Vanished => AppError::Internal(anyhow::anyhow!(e.to_string())),
        }
    }
}

impl From<OffboardError> for AppError {
    fn from(e: OffboardError) -> Self {
        match e {
            OffboardError::Pki(_) => AppError::Unavailable(e.to_string()),
            OffboardError::Policy(e) => e.into(),
            OffboardError::Db(e) => e.into(),
        }
    }
}

impl From<ClaimError> for AppError {
    fn from(e: ClaimError) -> Self {
        use ClaimError as E;
        match e {
            E::NeedsCard | E::OtherSession | E::WrongAgentKey => AppError::Forbidden(e.to_string()),
            E::NoChallenge(_) => AppError::NotFound(e.to_string()),
            E::Replayed | E::Expired | E::AgentKeyChanged => AppError::Conflict(e.to_string()),
            E::SerialMismatch { .. } | E::Proof(_) => AppError::Unprocessable(e.to_string()),
            E::Agent(e) => e.into(),
            E::Internal(e) => AppError::Internal(e),
            E::Db(e) => e.into(),
        }
    }
}

impl From<TransitionError> for AppError {
    fn from(e: TransitionError) -> Self {
        use TransitionError as E;
        match e {
            E::UnknownState(_) => AppError::BadRequest(e.to_string()),
            E::RoleMayNot(_) => AppError::Forbidden(e.to_string()),
            E::ByEnrollment | E::NotAllowed { .. } | E::ChangedMeanwhile => {
                AppError::Conflict(e.to_string())
            }
            E::BadReason(e) => e.into(),
            E::Lookup(e) => e.into(),
            E::Pki(e) => e.into(),
            E::Db(e) => e.into(),
        }
    }
}

impl From<AssignError> for AppError {
    fn from(e: AssignError) -> Self {
        match e {
            AssignError::NotOperator => AppError::Forbidden(e.to_string()),
            AssignError::NotFound(_) => AppError::NotFound(e.to_string()),
            AssignError::Owner(e) => e.into(),
            AssignError::Db(e) => e.into(),
        }
    }
}

impl From<DetailsError> for AppError {
    fn from(e: DetailsError) -> Self {
        match e {
            DetailsError::Lookup(e) => e.into(),
            DetailsError::Escrow(e) => e.into(),
            DetailsError::Db(e) => e.into(),
        }
    }
}

impl From<SessionKeyError> for AppError {
    fn from(e: SessionKeyError) -> Self {
        match e {
            SessionKeyError::NotRegistered => AppError::Conflict(e.to_string()),
            SessionKeyError::Unreadable(_) => AppError::Internal(anyhow::anyhow!(e.to_string())),
            SessionKeyError::Db(e) => e.into(),
        }
    }
}

impl From<RegisterAgentError> for AppError {
    fn from(e: RegisterAgentError) -> Self {
        use RegisterAgentError as E;
        match e {
            E::NotOwnSession => AppError::Forbidden(e.to_string()),
            E::TooLarge => AppError::BadRequest(e.to_string()),
            E::Key(k @ AgentKeyError::TooSmall(_)) => AppError::Unprocessable(k.to_string()),
            E::Key(k) => AppError::BadRequest(k.to_string()),
            E::SessionGone => AppError::Unauthorized,
            E::Db(e) => e.into(),
        }
    }
}

impl From<OwnOperationError> for AppError {
    fn from(e: OwnOperationError) -> Self {
        match e {
            OwnOperationError::NotFound { .. } => AppError::NotFound(e.to_string()),
            OwnOperationError::StartedBySomeoneElse => AppError::Forbidden(e.to_string()),
            OwnOperationError::AlreadyFinished { .. } => AppError::Conflict(e.to_string()),
            OwnOperationError::Db(e) => e.into(),
        }
    }
}

impl From<NamesError> for AppError {
    fn from(e: NamesError) -> Self {
        match e {
            NamesError::Db(e) => e.into(),
            e @ NamesError::UnsafeEmail(_) => AppError::Unprocessable(e.to_string()),
            e => AppError::Conflict(e.to_string()),
        }
    }
}

impl From<AuthorizeError> for AppError {
    fn from(e: AuthorizeError) -> Self {
        use AuthorizeError as E;
        match e {
            E::NewPinNotAllowed | E::CertificateIdRequired | E::SlotRequired => {
                AppError::BadRequest(e.to_string())
            }
            E::PinRejected { .. } | E::KeyPolicy(_) => AppError::Unprocessable(e.to_string()),
            E::Unconfirmed { .. } | E::CertificateRevoked => AppError::Conflict(e.to_string()),
            E::NoCertificate { .. } => AppError::NotFound(e.to_string()),
            E::Lookup(e) => e.into(),
            E::Policy(e) => e.into(),
            E::Denied(e) => e.into(),
            E::Agent(e) => e.into(),
            E::Names(e) => e.into(),
            E::Approval(e) => e.into(),
            E::Escrow(e) => e.into(),
            E::PresenceRequired(_) | E::PinWithheld(_) => AppError::Forbidden(e.to_string()),
            E::Presence(e) => (*e).into(),
            E::Internal(e) => AppError::Internal(e),
            E::Db(e) => e.into(),
        }
    }
}

impl From<PresenceError> for AppError {
    fn from(e: PresenceError) -> Self {
        use PresenceError as E;
        match e {
            E::NoChallenge(_) => AppError::NotFound(e.to_string()),
            E::Replayed
            | E::Expired
            | E::AgentKeyChanged
            | E::EstablishedMeanwhile
            | E::NotEstablished(_) => AppError::Conflict(e.to_string()),
            E::OtherSession | E::WrongOperation | E::WrongAgentKey | E::BadSignature => {
                AppError::Forbidden(e.to_string())
            }
            E::Malformed(_) => AppError::BadRequest(e.to_string()),
            E::Attestation(_) => AppError::Unprocessable(e.to_string()),
            E::Agent(e) => e.into(),
            E::Internal(e) => AppError::Internal(e),
            E::Db(e) => e.into(),
        }
    }
}

impl From<ReissueError> for AppError {
    fn from(e: ReissueError) -> Self {
        use ReissueError as E;
        match e {
            E::NotResumable => AppError::Conflict(e.to_string()),
            E::PresenceRequired => AppError::Forbidden(e.to_string()),
            E::Presence(e) => (*e).into(),
            E::Lookup(e) => e.into(),
            E::Operation(e) => e.into(),
            E::Policy(e) => e.into(),
            E::Denied(e) => e.into(),
            E::Agent(e) => e.into(),
            E::Escrow(e) => e.into(),
            E::Internal(e) => AppError::Internal(e),
            E::Db(e) => e.into(),
        }
    }
}

impl From<ReportError> for AppError {
    fn from(e: ReportError) -> Self {
        use ReportError as E;
        match e {
            E::Gone(_) | E::NoDevice(_) => AppError::NotFound(e.to_string()),
            E::Lookup(e) => e.into(),
            E::Operation(e) => e.into(),
            E::Pki(e) => e.into(),
            E::Db(e) => e.into(),
        }
    }
}

impl From<SignCsrError> for AppError {
    fn from(e: SignCsrError) -> Self {
        use SignCsrError as E;
        match e {
            E::NoKeyGeneration { .. } => AppError::NotFound(e.to_string()),
            E::StartedBySomeoneElse => AppError::Forbidden(e.to_string()),
            E::GenerationFailed | E::GenerationExpired | E::AlreadyIssued => {
                AppError::Conflict(e.to_string())
            }
            E::Refused(reason) => AppError::Unprocessable(reason),
            E::NotApproved(reason) => AppError::Forbidden(reason),
            E::Lookup(e) => e.into(),
            E::Policy(e) => e.into(),
            E::Denied(e) => e.into(),
            E::Names(e) => e.into(),
            E::Pki(e) => e.into(),
            E::Db(e) => e.into(),
        }
    }
}

impl From<RevokeError> for AppError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NotOperator => AppError::Forbidden(e.to_string()),
            RevokeError::NotFound(_) => AppError::NotFound(e.to_string()),
            RevokeError::BadReason(e) => e.into(),
            RevokeError::Pki(e) => e.into(),
            RevokeError::Db(e) => e.into(),
        }
    }
}

impl From<GateError> for AppError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Db(e) => e.into(),
            e @ GateError::Pending { .. } => AppError::Conflict(e.to_string()),
        }
    }
}

impl From<DecideError> for AppError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound(_) => AppError::NotFound(e.to_string()),
            DecideError::OwnRequest | DecideError::NotDecider => AppError::Forbidden(e.to_string()),
            DecideError::NotPending { .. } => AppError::Conflict(e.to_string()),
            DecideError::Db(e) => e.into(),
        }
    }
}
