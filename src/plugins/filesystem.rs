//! The filesystem plugin: the `download` action over the aliases `privateDir`
//! (`{fs_root}/private/{username}/`) and `publicDir` (`{fs_root}/public/`).
//!
//! A path is served only if, with every symlink resolved, it is a file inside its alias root;
//! files are streamed, never read whole.

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use async_trait::async_trait;
use http_body_util::{BodyExt, StreamBody};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::{ActionResponse, Plugin, RequestContext};
use crate::auth::{has_right, Right};
use crate::http::body::text_response;
use crate::http::error::HttpError;
use crate::params::Params;
use crate::protocol::{self, get_str, Token, NS_FILESYSTEM};

static RIGHT_LOAD: LazyLock<Right> = LazyLock::new(|| Right::new("org.jwebsocket.plugins.filesystem.load"));

pub struct FilesystemPlugin {
    root: PathBuf,
}

impl FilesystemPlugin {
    pub fn new(root: &Path) -> Self {
        FilesystemPlugin { root: root.to_path_buf() }
    }

    /// The token-level error of a download (200, JSON, `reqType` `load`).
    fn error(msg: &str) -> ActionResponse {
        let mut request = Token::new();
        request.insert("ns".into(), NS_FILESYSTEM.into());
        request.insert("type".into(), "load".into());
        text_response(StatusCode::OK, protocol::to_text(&protocol::error_response(&request, msg)))
    }

    /// The folder `alias` names for `user` under `root`; `Err` is the token error's message.
    /// A private folder is one plain path component below `private/`, whatever the name.
    pub(crate) fn alias_root(root: &Path, alias: &str, user: &str) -> Result<PathBuf, String> {
        match alias {
            "privateDir" => {
                if user.is_empty() || user.contains(['/', '\\', '\0']) || user == "." || user == ".." {
                    return Err("access denied".into());
                }
                Ok(root.join("private").join(user))
            }
            "publicDir" => Ok(root.join("public")),
            other => Err(format!("The given alias '{other}' does not exist!")),
        }
    }

    /// The file `filename` names under `alias_root`, if it stays inside it.
    pub(crate) fn resolve(alias_root: &Path, filename: &str) -> Result<PathBuf, Resolve> {
        let relative = Path::new(filename);
        let escapes = filename.contains('\0')
            || filename.contains('\\')
            || relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if escapes {
            return Err(Resolve::Outside);
        }
        let root = alias_root.canonicalize().map_err(|_| Resolve::Missing)?;
        let path = root.join(relative).canonicalize().map_err(|_| Resolve::Missing)?;
        if !path.starts_with(&root) {
            return Err(Resolve::Outside);
        }
        if !path.is_file() {
            return Err(Resolve::Missing);
        }
        Ok(path)
    }

    async fn download(&self, ctx: &mut RequestContext<'_>, params: &Params) -> Result<ActionResponse, HttpError> {
        let filename = params.non_empty("filename").ok_or(HttpError::MissingFilename)?;
        let alias = params.non_empty("alias").unwrap_or("privateDir");
        // A store failure answers 503, never `access denied` for an empty session read.
        let session = ctx.engine.store.session_storage(ctx.session_id).await?;
        if !has_right(&session, &RIGHT_LOAD) {
            return Ok(Self::error("access denied"));
        }
        let user = get_str(&session, "$username").unwrap_or_default();
        let alias_root = match Self::alias_root(&self.root, alias, user) {
            Ok(root) => root,
            Err(msg) => return Ok(Self::error(&msg)),
        };
        let path = match Self::resolve(&alias_root, filename) {
            Ok(p) => p,
            Err(Resolve::Outside) => {
                tracing::info!(source_id = %ctx.connector_id, "download outside its alias refused");
                return Ok(Self::error(&format!("The file '{filename}' is out of the file-system location!")));
            }
            Err(Resolve::Missing) => {
                return Ok(Self::error(&format!("The file '{filename}' does not exist in the given alias!")));
            }
        };
        let file =
            tokio::fs::File::open(&path).await.map_err(|e| HttpError::Internal(format!("download open: {e}")))?;
        let len = file.metadata().await.map_err(|e| HttpError::Internal(format!("download stat: {e}")))?.len();
        let stream = futures_util::StreamExt::map(tokio_util::io::ReaderStream::new(file), |chunk| {
            chunk.map(hyper::body::Frame::data)
        });
        let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
        let headers = resp.headers_mut();
        let mime = mime_guess::from_path(&path).first_or_octet_stream();
        if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
            headers.insert(header::CONTENT_TYPE, v);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        Ok(resp)
    }
}

/// Why a download path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// It names something outside its alias root (`..`, an absolute path, a separator or NUL
    /// that could smuggle one, or a symlink that leads out).
    Outside,
    /// Nothing (or no regular file) is there.
    Missing,
}

/// `attachment; filename=NAME` as jWebSocket sends it when the name is plain; otherwise an
/// ASCII fallback plus the RFC 6266 `filename*`, so no name can inject a header or a quote.
pub fn content_disposition(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !name.is_empty() && name.chars().all(plain) {
        return format!("attachment; filename={name}");
    }
    let fallback: String = name.chars().map(|c| if plain(c) { c } else { '_' }).collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if (b as char).is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[async_trait]
impl Plugin for FilesystemPlugin {
    fn namespace(&self) -> &str {
        NS_FILESYSTEM
    }

    async fn process_token(&self, ctx: &mut RequestContext<'_>, token: &Token) {
        let kind = get_str(token, "type").unwrap_or("");
        let msg = format!("type '{kind}' is not supported; use action=download");
        ctx.reply(protocol::error_response(token, &msg)).await;
    }

    fn actions(&self) -> &[&'static str] {
        &["download"]
    }

    async fn process_action(
        &self,
        ctx: &mut RequestContext<'_>,
        _action: &str,
        params: &Params,
    ) -> Result<ActionResponse, HttpError> {
        self.download(ctx, params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_cannot_inject() {
        assert_eq!(content_disposition("a.txt"), "attachment; filename=a.txt");
        let d = content_disposition("x\r\nSet-Cookie: a=\"b\".txt");
        assert!(!d.contains('\r') && !d.contains('\n') && !d[..d.find(';').unwrap()].contains('"'), "{d}");
        assert!(d.contains("filename*=UTF-8''x%0D%0ASet-Cookie%3A%20a%3D%22b%22.txt"), "{d}");
    }
}
