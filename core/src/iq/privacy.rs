//! `xmlns="privacy"`: the account's privacy settings.
//!
//! Get: `<iq xmlns="privacy" type="get" to="s.whatsapp.net"><privacy/></iq>` →
//! `<privacy><category name value/>…</privacy>`. Set one:
//! `<iq type="set"><privacy><category name value/></privacy></iq>`.

use super::{IqError, MAX_LIST, children, ok, str_attr};
use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::{IqRequest, IqResult};

/// A privacy setting's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrivacyCategory {
    /// Who sees "last seen" (`last`).
    LastSeen,
    /// Who sees "online" (`online`).
    Online,
    /// Who sees the profile picture (`profile`).
    Profile,
    /// Who sees the status text (`status`).
    Status,
    /// Whether read receipts are sent (`readreceipts`).
    ReadReceipts,
    /// Who may add us to groups (`groupadd`).
    GroupAdd,
    /// Who may call (`calladd`).
    CallAdd,
    /// Who may message (`messages`).
    Messages,
    /// Another name, verbatim.
    Other(String),
}

impl PrivacyCategory {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::LastSeen => "last",
            Self::Online => "online",
            Self::Profile => "profile",
            Self::Status => "status",
            Self::ReadReceipts => "readreceipts",
            Self::GroupAdd => "groupadd",
            Self::CallAdd => "calladd",
            Self::Messages => "messages",
            Self::Other(s) => s,
        }
    }

    /// The category of a wire name.
    pub fn parse(name: &str) -> Self {
        match name {
            "last" => Self::LastSeen,
            "online" => Self::Online,
            "profile" => Self::Profile,
            "status" => Self::Status,
            "readreceipts" => Self::ReadReceipts,
            "groupadd" => Self::GroupAdd,
            "calladd" => Self::CallAdd,
            "messages" => Self::Messages,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A privacy setting's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrivacyValue {
    /// Everyone (`all`).
    All,
    /// Contacts only (`contacts`).
    Contacts,
    /// Contacts except some (`contact_blacklist`).
    ContactsExcept,
    /// Nobody (`none`).
    Nobody,
    /// As "last seen" (`match_last_seen`, for online).
    MatchLastSeen,
    /// Known numbers (`known`, for calls).
    Known,
    /// Another value, verbatim.
    Other(String),
}

impl PrivacyValue {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::All => "all",
            Self::Contacts => "contacts",
            Self::ContactsExcept => "contact_blacklist",
            Self::Nobody => "none",
            Self::MatchLastSeen => "match_last_seen",
            Self::Known => "known",
            Self::Other(s) => s,
        }
    }

    /// The value of a wire string.
    pub fn parse(value: &str) -> Self {
        match value {
            "all" => Self::All,
            "contacts" => Self::Contacts,
            "contact_blacklist" => Self::ContactsExcept,
            "none" => Self::Nobody,
            "match_last_seen" => Self::MatchLastSeen,
            "known" => Self::Known,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The settings as the server listed them, in its order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PrivacySettings {
    /// Each category with its value.
    pub settings: Vec<(PrivacyCategory, PrivacyValue)>,
}

impl PrivacySettings {
    /// The value of `category`, when the server listed it.
    pub fn get(&self, category: &PrivacyCategory) -> Option<&PrivacyValue> {
        self.settings
            .iter()
            .find(|(c, _)| c == category)
            .map(|(_, v)| v)
    }
}

/// The settings: `get`, `<privacy/>`.
pub fn get() -> IqRequest {
    IqRequest::iq("privacy", "get", Jid::server(), vec![Node::new("privacy")])
}

/// Changes one setting: `set`, `<privacy><category name value/></privacy>`.
pub fn set(category: &PrivacyCategory, value: &PrivacyValue) -> IqRequest {
    IqRequest::iq(
        "privacy",
        "set",
        Jid::server(),
        vec![
            Node::new("privacy").children([Node::new("category")
                .attr("name", category.as_str())
                .attr("value", value.as_str())]),
        ],
    )
}

/// The answer to [`get`].
pub fn parse(result: IqResult) -> Result<PrivacySettings, IqError> {
    let node = ok(result)?;
    let privacy = node
        .child("privacy")
        .ok_or(IqError::Malformed("no <privacy>"))?;
    Ok(PrivacySettings {
        settings: children(privacy, "category")
            .take(MAX_LIST)
            .filter_map(|c| {
                Some((
                    PrivacyCategory::parse(&str_attr(c, "name")?),
                    PrivacyValue::parse(&str_attr(c, "value")?),
                ))
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = set(&PrivacyCategory::LastSeen, &PrivacyValue::Contacts).node;
        let cat = s
            .child("privacy")
            .and_then(|p| p.child("category"))
            .unwrap();
        assert_eq!(cat.attr_str("name"), Some("last"));
        assert_eq!(cat.attr_str("value"), Some("contacts"));
        assert_eq!(get().node.attr_str("type"), Some("get"));
        let answer = IqResult::Ok(
            Node::new("iq").children([Node::new("privacy").children([
                Node::new("category")
                    .attr("name", "last")
                    .attr("value", "all"),
                Node::new("category")
                    .attr("name", "groupadd")
                    .attr("value", "contact_blacklist"),
                Node::new("category")
                    .attr("name", "new_thing")
                    .attr("value", "maybe"),
                Node::new("category"),
            ])]),
        );
        let p = parse(answer).unwrap();
        assert_eq!(p.settings.len(), 3);
        assert_eq!(p.get(&PrivacyCategory::LastSeen), Some(&PrivacyValue::All));
        assert_eq!(
            p.get(&PrivacyCategory::GroupAdd),
            Some(&PrivacyValue::ContactsExcept)
        );
        assert_eq!(
            p.get(&PrivacyCategory::Other("new_thing".into())),
            Some(&PrivacyValue::Other("maybe".into()))
        );
        assert!(parse(IqResult::Ok(Node::new("iq"))).is_err());
        for v in [
            "all",
            "contacts",
            "contact_blacklist",
            "none",
            "match_last_seen",
            "known",
        ] {
            assert_eq!(PrivacyValue::parse(v).as_str(), v);
        }
    }
}
