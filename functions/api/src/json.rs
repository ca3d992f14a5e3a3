//! Strict request parsing: JSON bodies and query strings that name the offending field, so a
//! client always learns what to fix. Syntax errors are 400; well-formed input with a wrong
//! field, type or value is 422; a body over the limit is 413; a non-JSON body is 415; a body
//! that has not arrived within [`BODY_READ_TIMEOUT`] is 408.
//! Bodies must be JSON objects, and no string may hold U+0000 (Postgres cannot store it).

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !(mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::unsupported_media("send the body as JSON with Content-Type: application/json"));
        }
        // A body that trickles in (slow-loris) would hold a connection and a task forever.
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await.map_err(|_| {
            ApiError::request_timeout(format!(
                "the request body did not arrive within {} s; send it whole, at once",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })?;
        let bytes = read.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the request body is over the size limit; split the batch or shrink the payload")
            } else {
                ApiError::malformed("the request body could not be read")
            }
        })?;
        parse(&bytes).map(StrictJson)
    }
}

/// How long a request body may take to arrive once its headers have.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// serde_json's recursion limit (`serde_json::Deserializer` refuses deeper input).
const MAX_DEPTH: usize = 128;

/// What is wrong with a body that is not JSON, in words that point at the fix: serde_json
/// calls valid but too deeply nested JSON and a lone UTF-16 surrogate escape by their parser
/// states, not by what the client sent.
fn syntax_error(bytes: &[u8], e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("recursion limit exceeded") {
        return format!("the body nests arrays and objects deeper than {MAX_DEPTH} levels; flatten it");
    }
    if msg.contains("hex escape") && has_surrogate_escape(bytes) {
        return format!(
            "the body has a \\u escape of a lone UTF-16 surrogate (\\uD800–\\uDFFF without its pair, line {} column {}); \
             JSON text must be valid Unicode",
            e.line(),
            e.column()
        );
    }
    format!("the body is not valid JSON: {e}")
}

/// A `\uD800`–`\uDFFF` escape anywhere in the body.
fn has_surrogate_escape(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'u' && w[2].eq_ignore_ascii_case(&b'd') && matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
    })
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map(|Object(v)| v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let msg = clean(&inner.to_string());
                ApiError::validation(field_of(&path, &msg), msg)
            }
            // serde_json's reader answers a derived enum given a boolean, number or array
            // (`"jitter": false`) with the syntax error "expected value", though the body is
            // valid JSON: a body that parses is a wrong type, found again from its tree.
            _ => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(tree) => type_error::<T>(tree),
                Err(_) => ApiError::malformed(syntax_error(bytes, &inner)),
            },
        }
    })?;
    de.end().map_err(|e| ApiError::malformed(syntax_error(bytes, &e)))?;
    // U+0000 can only arrive as the escape `\u0000`; the scan is cheap, the walk names the field.
    if bytes.windows(6).any(|w| w == br"\u0000")
        && let Some(field) = serde_json::from_slice(bytes).ok().and_then(|v| nul_at(&v, ""))
    {
        return Err(ApiError::validation(field, NO_NUL));
    }
    Ok(value)
}

/// The 422 for a valid JSON `tree` that does not decode as `T`: the field at fault and, for a
/// field that takes one of a set of names, the names.
fn type_error<T: DeserializeOwned>(mut tree: serde_json::Value) -> ApiError {
    let Err(e) = serde_path_to_error::deserialize::<_, Object<T>>(&tree) else {
        // Decodes from the tree after all: nothing to name but the body.
        return ApiError::validation("body", "does not match the schema of this request");
    };
    let path = e.path().clone();
    let mut msg = clean(&e.into_inner().to_string());
    // A derived enum says it expects "string or map"; a name no variant has makes it list them.
    if let Some(got) = msg.strip_suffix(", expected string or map")
        && let Some(slot) = at_path(&mut tree, &path)
    {
        *slot = serde_json::Value::String(String::new());
        if let Err(e) = serde_path_to_error::deserialize::<_, Object<T>>(&tree)
            && e.path().to_string() == path.to_string()
            && let Some((_, allowed)) = e.into_inner().to_string().split_once("`, expected ")
        {
            msg = format!("{got}, expected {}", clean(allowed));
        }
    }
    ApiError::validation(field_of(&path.to_string(), &msg), msg)
}

/// The value at a deserializer's error path in `tree`.
fn at_path<'a>(tree: &'a mut serde_json::Value, path: &serde_path_to_error::Path) -> Option<&'a mut serde_json::Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(tree, |v, seg| match seg {
        Segment::Seq { index } => v.get_mut(*index),
        Segment::Map { key } => v.get_mut(key.as_str()),
        _ => None,
    })
}

const NO_NUL: &str = "must not contain the NUL character (U+0000)";

/// The path of the first string or key holding U+0000.
fn nul_at(v: &serde_json::Value, at: &str) -> Option<String> {
    let here = || if at.is_empty() { "body".to_owned() } else { at.to_owned() };
    match v {
        serde_json::Value::String(s) => s.contains('\0').then(here),
        serde_json::Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| nul_at(x, &format!("{at}[{i}]"))),
        serde_json::Value::Object(m) => m.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                return Some(here());
            }
            nul_at(x, &if at.is_empty() { k.clone() } else { format!("{at}.{k}") })
        }),
        _ => None,
    }
}

/// `T` from a JSON object only. serde's derived structs also accept an array of their fields in
/// order (`["noop"]` as a task), which the API neither documents nor wants.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// `#[serde(deserialize_with)]` for an optional struct field: an object or null.
pub fn opt_object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(d)?.map(|Object(v)| v))
}

/// `#[serde(deserialize_with)]` for a list of structs: each item an object.
pub fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Object<T>>::deserialize(d)?.into_iter().map(|Object(v)| v).collect())
}

/// A path parameter; one that is not valid percent-encoded UTF-8 is a problem+json 400 like
/// every other error (axum's own rejection is text/plain).
pub struct StrictPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for StrictPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(StrictPath(v)),
            Err(e) => Err(ApiError::malformed(format!("the path is not valid: {}", e.body_text()))),
        }
    }
}

/// The field at fault: the error's path, or for a missing field the field itself.
fn field_of(path: &str, msg: &str) -> String {
    let missing = msg.strip_prefix("missing field `").and_then(|m| m.split('`').next());
    match (path, missing) {
        (".", Some(f)) => f.to_owned(),
        (".", None) => "body".to_owned(),
        (p, Some(f)) => format!("{p}.{f}"),
        (p, None) => p.to_owned(),
    }
}

/// serde's messages end with " at line 1 column 42"; the field path says more.
fn clean(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Query parameters with unknown names refused and bad values named.
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(q);
        match de {
            Ok(v) => Ok(StrictQuery(v)),
            Err(e) => Err(e),
        }
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    // Query values are strings; go through a JSON object so numbers and the field path work
    // the same way as in bodies.
    let mut map = serde_json::Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).ok_or_else(|| ApiError::malformed("the query string is not valid percent-encoded UTF-8"))?;
        let v = percent_decode(v).ok_or_else(|| ApiError::malformed("the query string is not valid percent-encoded UTF-8"))?;
        if map.contains_key(&k) {
            return Err(ApiError::validation(k, "given more than once"));
        }
        if v.contains('\0') {
            return Err(ApiError::validation(k, NO_NUL));
        }
        map.insert(k, serde_json::Value::String(v));
    }
    let v = serde_json::Value::Object(map);
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let msg = clean(&e.into_inner().to_string());
        let field = field_of(&path, &msg);
        ApiError::validation(if field == "body" { "query".into() } else { field }, msg)
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A number given as a query-string value.
pub fn de_opt_num<'de, D, N>(d: D) -> Result<Option<N>, D::Error>
where
    D: serde::Deserializer<'de>,
    N: std::str::FromStr,
{
    use serde::Deserialize;
    let s: Option<String> = Option::deserialize(d)?;
    match s {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{s:?} is not a valid number"))),
    }
}
