//! ksqlDB's URL functions: URL_EXTRACT_PROTOCOL, _HOST, _PORT, _PATH, _QUERY, _FRAGMENT and
//! _PARAMETER read the parts of a URL as Java's `java.net.URI` splits it (RFC 3986); the query
//! and a parameter's value are returned as written, still encoded. URL_ENCODE_PARAM and
//! URL_DECODE_PARAM encode and decode a query parameter as Java's `URLEncoder` and
//! `URLDecoder` do (UTF-8, a space as `+`). A null argument, a part the URL lacks or text that
//! is not a URL gives null.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, Int32Builder, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

/// What a URL function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Protocol,
    Host,
    Port,
    Path,
    Query,
    Fragment,
    Parameter,
    Encode,
    Decode,
}

const FUNCTIONS: [(&str, Part); 9] = [
    ("url_extract_protocol", Part::Protocol),
    ("url_extract_host", Part::Host),
    ("url_extract_port", Part::Port),
    ("url_extract_path", Part::Path),
    ("url_extract_query", Part::Query),
    ("url_extract_fragment", Part::Fragment),
    ("url_extract_parameter", Part::Parameter),
    ("url_encode_param", Part::Encode),
    ("url_decode_param", Part::Decode),
];

#[derive(Debug, PartialEq, Eq, Hash)]
struct UrlFunction {
    name: &'static str,
    part: Part,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    FUNCTIONS
        .into_iter()
        .map(|(name, part)| {
            ScalarUDF::new_from_impl(UrlFunction {
                name,
                part,
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

impl ScalarUDFImpl for UrlFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        let wanted = if self.part == Part::Parameter { 2 } else { 1 };
        if arguments.len() != wanted || arguments.iter().any(|t| !is_text(t)) {
            let takes = match wanted {
                2 => "a URL and a parameter name",
                _ => "one string",
            };
            return plan_err!("{} takes {takes}", self.name.to_uppercase());
        }
        Ok(match self.part {
            Part::Port => DataType::Int32,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts: Vec<ArrayRef> = arrays
            .iter()
            .map(|a| cast(a, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let text = |i: usize, row: usize| {
            let array = texts[i].as_any().downcast_ref::<StringArray>()?;
            array.is_valid(row).then(|| array.value(row))
        };
        if self.part == Part::Port {
            let mut ports = Int32Builder::with_capacity(rows);
            for row in 0..rows {
                ports.append_option(text(0, row).and_then(|url| Url::parse(url)?.port));
            }
            return Ok(ColumnarValue::Array(Arc::new(ports.finish())));
        }
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        for row in 0..rows {
            let Some(input) = text(0, row) else {
                out.append_null();
                continue;
            };
            let value = match self.part {
                Part::Encode => Some(encode_param(input)),
                Part::Decode => decode_param(input),
                Part::Parameter => text(1, row).and_then(|name| {
                    Url::parse(input)?.query?.split('&').find_map(|pair| {
                        match pair.split_once('=') {
                            Some((key, value)) if key == name => Some(value.to_string()),
                            _ => None,
                        }
                    })
                }),
                part => Url::parse(input).and_then(|url| url.part(part)),
            };
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

/// A URL's parts, as `java.net.URI` splits a hierarchical URI.
struct Url<'a> {
    scheme: Option<&'a str>,
    host: Option<&'a str>,
    port: Option<i32>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Url<'a> {
    /// RFC 3986's appendix B: scheme, authority, path, query and fragment.
    fn parse(text: &'a str) -> Option<Url<'a>> {
        static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"^(?:([A-Za-z][A-Za-z0-9+.\-]*):)?(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?(?:#(.*))?$")
                .expect("a valid pattern")
        });
        let captures = PATTERN.captures(text)?;
        let group = |i: usize| captures.get(i).map(|m| m.as_str());
        let (mut host, mut port) = (None, None);
        if let Some(authority) = group(2) {
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            // An IPv6 address is in brackets: `[::1]:8080`.
            let split = match host_port.starts_with('[') {
                true => host_port
                    .find("]:")
                    .map(|end| (&host_port[..=end], &host_port[end + 2..])),
                false => host_port.rsplit_once(':'),
            };
            let (name, number) = split.unwrap_or((host_port, ""));
            host = Some(name);
            if !number.is_empty() {
                port = Some(number.parse().ok()?);
            }
        }
        Some(Url {
            scheme: group(1),
            host: host.filter(|h| !h.is_empty()),
            port,
            path: group(3).unwrap_or(""),
            query: group(4),
            fragment: group(5),
        })
    }

    fn part(&self, part: Part) -> Option<String> {
        let text = match part {
            Part::Protocol => self.scheme?,
            Part::Host => self.host?,
            Part::Path => self.path,
            Part::Query => self.query?,
            Part::Fragment => self.fragment?,
            _ => return None,
        };
        Some(text.to_string())
    }
}

/// Java's `URLEncoder.encode(text, UTF_8)`: letters, digits and `.-*_` as they are, a space as
/// `+`, every other byte as `%XX`.
fn encode_param(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Java's `URLDecoder.decode(text, UTF_8)`: `+` as a space, `%XX` as its byte; `None` for a
/// malformed escape or bytes that are not UTF-8.
fn decode_param(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_as_java_uri_reads_them() {
        let url = Url::parse("https://test@confluent.io:8080/nested/path?q=2&b#frag").unwrap();
        assert_eq!(url.scheme, Some("https"));
        assert_eq!(url.host, Some("confluent.io"));
        assert_eq!(url.port, Some(8080));
        assert_eq!(url.path, "/nested/path");
        assert_eq!(url.query, Some("q=2&b"));
        assert_eq!(url.fragment, Some("frag"));
        let bare = Url::parse("www.confluent.io").unwrap();
        assert_eq!((bare.scheme, bare.host, bare.port), (None, None, None));
        assert_eq!(bare.path, "www.confluent.io");
        assert_eq!(Url::parse("http://www.test.com?query").unwrap().path, "");
        assert!(Url::parse("http://host:port/").is_none());
        let v6 = Url::parse("http://[::1]:9092/p").unwrap();
        assert_eq!((v6.host, v6.port), (Some("[::1]"), Some(9092)));
    }

    #[test]
    fn parameters_encode_and_decode_as_java_does() {
        assert_eq!(encode_param("?foo $bar"), "%3Ffoo+%24bar");
        assert_eq!(encode_param("é"), "%C3%A9");
        assert_eq!(decode_param("%3Ffoo+%24bar").as_deref(), Some("?foo $bar"));
        assert_eq!(decode_param("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_param("bad%2"), None);
    }
}
