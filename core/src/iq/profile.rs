//! The profile: `xmlns="w:profile:picture"` (picture URLs) and `xmlns="status"` (our own
//! status, the "about" text).
//!
//! Picture: `<iq xmlns="w:profile:picture" type="get" to="s.whatsapp.net" target=JID>
//! <picture type="preview|image" query="url" [id=known id]/></iq>` →
//! `<picture id url type direct_path/>`; 404 when there is none, 401 when privacy hides it,
//! `status="304"` when the known id is still current.
//!
//! Status text: `<iq xmlns="status" type="set" to="s.whatsapp.net"><status>UTF-8</status></iq>`.

use super::{IqError, ok, str_attr};
use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::{IqRequest, IqResult};

/// A profile picture.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProfilePicture {
    /// The picture's id (changes with the picture).
    pub id: String,
    /// Where to download it.
    pub url: String,
    /// `preview` or `image`.
    pub kind: String,
    /// The CDN path, when given.
    pub direct_path: Option<String>,
}

/// The URL of `jid`'s picture (a user or a group): the small `preview`, or the full `image`.
/// With `known_id`, the server answers "unchanged" (`None`) when that is still the picture.
pub fn picture(jid: &Jid, preview: bool, known_id: Option<&str>) -> IqRequest {
    let mut pic = Node::new("picture")
        .attr("type", if preview { "preview" } else { "image" })
        .attr("query", "url");
    if let Some(id) = known_id {
        pic = pic.attr("id", id);
    }
    let mut req = IqRequest::iq("w:profile:picture", "get", Jid::server(), vec![pic]);
    req.node = req.node.attr("target", jid.to_non_device());
    req
}

/// The answer to [`picture`]: `None` when there is no picture (404, `status="204"`) or the
/// known one is current (`status="304"`).
pub fn parse_picture(result: IqResult) -> Result<Option<ProfilePicture>, IqError> {
    let node = match ok(result) {
        Ok(node) => node,
        Err(IqError::Server { code: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(pic) = node.child("picture") else {
        return Ok(None);
    };
    if matches!(pic.attr_str("status"), Some("304" | "204")) {
        return Ok(None);
    }
    let url = str_attr(pic, "url").ok_or(IqError::Malformed("picture without url"))?;
    Ok(Some(ProfilePicture {
        id: str_attr(pic, "id").unwrap_or_default(),
        url,
        kind: str_attr(pic, "type").unwrap_or_default(),
        direct_path: str_attr(pic, "direct_path"),
    }))
}

/// Sets (or, with `None`, removes) the picture of `jid`: our own user, or a group we
/// administer. `jpeg` is the image as the apps send it (a square JPEG, 640 px at most).
pub fn set_picture(jid: &Jid, jpeg: Option<&[u8]>) -> IqRequest {
    let children = match jpeg {
        Some(bytes) => vec![
            Node::new("picture")
                .attr("type", "image")
                .bytes(bytes.to_vec()),
        ],
        None => Vec::new(),
    };
    let mut req = IqRequest::iq("w:profile:picture", "set", Jid::server(), children);
    req.node = req.node.attr("target", jid.to_non_device());
    req
}

/// The answer to [`set_picture`]: the new picture's id (`None` after a removal).
pub fn parse_set_picture(result: IqResult, removed: bool) -> Result<Option<String>, IqError> {
    let node = ok(result)?;
    if removed {
        return Ok(None);
    }
    node.child("picture")
        .and_then(|p| str_attr(p, "id"))
        .map(Some)
        .ok_or(IqError::Malformed("no picture id"))
}

/// Sets our status ("about") text.
pub fn set_status(text: &str) -> IqRequest {
    IqRequest::iq(
        "status",
        "set",
        Jid::server(),
        vec![Node::new("status").bytes(text.as_bytes().to_vec())],
    )
}

/// `<presence name=NAME/>`: tells the server our new push name (SESSION.md §11: sent without
/// `type` when the name changes).
pub fn push_name_presence(name: &str) -> Node {
    Node::new("presence").attr("name", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_query_and_answers() {
        let j: Jid = "1:2@s.whatsapp.net".parse().unwrap();
        let req = picture(&j, true, Some("5")).node;
        assert_eq!(req.attr_jid("target"), Some(&j.to_non_device()));
        let pic = req.child("picture").unwrap();
        assert_eq!(pic.attr_str("type"), Some("preview"));
        assert_eq!(pic.attr_str("query"), Some("url"));
        assert_eq!(pic.attr_str("id"), Some("5"));
        let answer = |pic: Node| IqResult::Ok(Node::new("iq").children([pic]));
        let got = parse_picture(answer(
            Node::new("picture")
                .attr("id", "6")
                .attr("url", "https://pps.example/6")
                .attr("type", "image")
                .attr("direct_path", "/v/6"),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(got.url, "https://pps.example/6");
        assert_eq!(got.direct_path.as_deref(), Some("/v/6"));
        assert_eq!(
            parse_picture(answer(Node::new("picture").attr("status", "304"))),
            Ok(None)
        );
        assert!(parse_picture(answer(Node::new("picture").attr("id", "1"))).is_err());
        let missing = IqResult::Error {
            code: 404,
            text: "item-not-found".into(),
            node: Node::new("iq"),
        };
        assert_eq!(parse_picture(missing), Ok(None));
        let hidden = IqResult::Error {
            code: 401,
            text: "not-authorized".into(),
            node: Node::new("iq"),
        };
        assert_eq!(parse_picture(hidden).unwrap_err().code(), Some(401));
        let s = set_status("away").node;
        assert_eq!(
            s.child("status").and_then(Node::content_bytes),
            Some(&b"away"[..])
        );
        assert_eq!(push_name_presence("Al").attr_str("name"), Some("Al"));
    }
}
