//! What the engine and the system plugin (`org.jwebsocket.plugins.system`) both know of the
//! plugin's tokens: the welcome token queued at open, the plain `send` the store may take in
//! one step, and its texts. The plugin's own behaviour is in `plugins::system`.

use serde_json::{json, Value};

use super::{get_str, Token, TokenFields, TokenView, ANONYMOUS, NS_SYSTEM, VENDOR, VERSION};
use crate::config::Config;

/// Session key with the events a client does not want, e.g. `,connect,disconnect`.
pub const EVENTS_EXCLUDE: &str = "org.jwebsocket.plugins.system.events.exclude";

/// The welcome token queued at open (field order of docs/PROTOCOL.md, "Welcome").
pub fn welcome(config: &Config, connector_id: &str, session: &Token) -> Token {
    let username = get_str(session, "$username")
        .map(str::to_owned)
        .or_else(|| config.allow_anonymous.then(|| ANONYMOUS.to_owned()));
    let mut t = Token::new();
    t.insert("ns".into(), NS_SYSTEM.into());
    t.insert("type".into(), "welcome".into());
    t.insert("vendor".into(), VENDOR.into());
    t.insert("version".into(), VERSION.into());
    t.insert("engines".into(), json!([{"id": "http0", "class": "pollgate.HTTPEngine"}]));
    t.insert("sourceId".into(), connector_id.into());
    t.insert("maxFrameSize".into(), config.maxframesize.into());
    t.insert("timeout".into(), config.timeout_minutes().into());
    if let Some(name) = &username {
        t.insert("username".into(), name.as_str().into());
    }
    t.insert("protocolVersion".into(), 13.into());
    t.insert("subProtocol".into(), Value::Null);
    t.insert("encodingFormats".into(), json!(["base64", "zipBase64"]));
    if config.allow_anonymous {
        t.insert("anonymous".into(), (username.as_deref() == Some(ANONYMOUS)).into());
    }
    t
}

/// A token the store may take in one step ([`crate::store::Store::send_step`]): a system
/// `send` to a `targetId`, not a `forward.json` and without `unid` (whose answers the
/// plugin words itself). `None` for any other text.
pub fn one_step_send(data: &str) -> Option<TokenView<'_>> {
    let view = TokenView::parse(data)?;
    let plain = view.str_field("ns").as_deref() == Some(NS_SYSTEM)
        && view.str_field("type").as_deref() == Some("send")
        && view.str_field("targetId").is_some()
        && view.str_field("unid").is_none()
        && view.str_field("action").as_deref() != Some("forward.json");
    plain.then_some(view)
}

/// The answer to a `send` or `respond` whose target does not exist.
pub fn no_target(id: &str) -> String {
    format!("No target connector with endpoint-id '{id}' found.")
}
