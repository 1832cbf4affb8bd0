//! Eureka's XML, mapped to and from its JSON shape.
//!
//! Eureka's JSON is its XML through XStream's convention, so one mapping serves every
//! resource: an attribute is an `@name` key, the text of an element that has attributes is
//! `$`, child elements are keys, repeated children are an array, and a leaf is its text.
//! `<port enabled="true">8081</port>` is `"port": {"@enabled": "true", "$": "8081"}`; the
//! model's lenient readers take the strings XML gives for numbers and booleans.
//!
//! # Examples
//!
//! ```
//! use msa_discovery::eureka::{InstanceEnvelope, xml};
//!
//! let body = r#"<instance><instanceId>h:orders:8081</instanceId><hostName>h</hostName>
//!   <app>ORDERS</app><ipAddr>127.0.0.1</ipAddr><status>UP</status>
//!   <port enabled="true">8081</port>
//!   <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
//!   <metadata class="java.util.Collections$EmptyMap"/></instance>"#;
//! let envelope: InstanceEnvelope = xml::from_str(body).unwrap();
//! assert_eq!(envelope.instance.port.port, 8081);
//! let written = xml::to_string(&envelope).unwrap();
//! assert!(written.contains(r#"<port enabled="true">8081</port>"#));
//! ```

use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// XML that does not read as the expected resource.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlError(String);

/// Reads `text` as `T` (an envelope: [`InstanceEnvelope`](super::InstanceEnvelope),
/// [`ApplicationsEnvelope`](super::ApplicationsEnvelope), ...).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, XmlError> {
    let value = to_json(text)?;
    serde_json::from_value(value).map_err(|e| XmlError(format!("unexpected XML content: {e}")))
}

/// Writes `value` (an envelope) as XML.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, XmlError> {
    let value = serde_json::to_value(value).map_err(|e| XmlError(e.to_string()))?;
    let Value::Object(root) = value else {
        return Err(XmlError(
            "only an envelope ({\"instance\": ...}) can be written".into(),
        ));
    };
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    for (name, value) in &root {
        write_element(&mut out, name, value);
    }
    Ok(out)
}

struct Frame {
    name: String,
    attributes: Map<String, Value>,
    children: Map<String, Value>,
    text: String,
}

impl Frame {
    fn into_value(self) -> (String, Value) {
        let value = if self.children.is_empty() && self.attributes.is_empty() {
            Value::String(self.text)
        } else {
            let mut map = self.attributes;
            if self.children.is_empty() {
                if !self.text.is_empty() {
                    map.insert("$".into(), Value::String(self.text));
                }
            } else {
                map.extend(self.children);
            }
            Value::Object(map)
        };
        (self.name, value)
    }
}

fn add_child(children: &mut Map<String, Value>, name: String, value: Value) {
    match children.get_mut(&name) {
        None => {
            children.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn xml_error(position: u64, error: impl std::fmt::Display) -> XmlError {
    XmlError(format!("malformed XML at byte {position}: {error}"))
}

/// The deepest nesting of elements read: Eureka's documents go five deep
/// (`applications/application/instance/metadata/key`). A body nested deeper is refused
/// as it is read, before it can build a value whose drop recurses as deep.
pub const MAX_DEPTH: usize = 32;

/// Parses XML into Eureka's JSON shape: `{"<root>": ...}`; elements nested deeper than
/// [`MAX_DEPTH`] are an error.
pub fn to_json(text: &str) -> Result<Value, XmlError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root = Map::new();
    loop {
        let position = reader.buffer_position();
        let event = reader.read_event().map_err(|e| xml_error(position, e))?;
        match event {
            Event::Start(start) => {
                if stack.len() == MAX_DEPTH {
                    return Err(xml_error(
                        position,
                        format!("elements nest deeper than {MAX_DEPTH}"),
                    ));
                }
                stack.push(frame(&start, position)?);
            }
            Event::Empty(start) => {
                stack.push(frame(&start, position)?);
                close(&mut stack, &mut root);
            }
            Event::End(_) => {
                if stack.is_empty() {
                    return Err(xml_error(position, "a closing tag without an opening one"));
                }
                close(&mut stack, &mut root);
            }
            Event::Text(text) => {
                if let Some(frame) = stack.last_mut() {
                    let text = text.xml_content().map_err(|e| xml_error(position, e))?;
                    frame.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(frame) = stack.last_mut() {
                    frame.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(frame) = stack.last_mut() {
                    let name = reference.decode().map_err(|e| xml_error(position, e))?;
                    frame.text.push(
                        entity(&name).ok_or_else(|| {
                            xml_error(position, format!("unknown entity &{name};"))
                        })?,
                    );
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlError("the XML ends inside an element".into()));
    }
    if root.is_empty() {
        return Err(XmlError("no XML element".into()));
    }
    Ok(Value::Object(root))
}

fn frame(start: &quick_xml::events::BytesStart<'_>, position: u64) -> Result<Frame, XmlError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attributes = Map::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| xml_error(position, e))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|e| xml_error(position, e))?;
        attributes.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Ok(Frame {
        name,
        attributes,
        children: Map::new(),
        text: String::new(),
    })
}

fn close(stack: &mut Vec<Frame>, root: &mut Map<String, Value>) {
    if let Some(frame) = stack.pop() {
        let (name, value) = frame.into_value();
        match stack.last_mut() {
            Some(parent) => add_child(&mut parent.children, name, value),
            None => {
                root.insert(name, value);
            }
        }
    }
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let code = name.strip_prefix('#')?;
            let number = match code.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => code.parse().ok()?,
            };
            char::from_u32(number)?
        }
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn write_element(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Array(items) => {
            for item in items {
                write_element(out, name, item);
            }
        }
        Value::Object(map) => {
            out.push('<');
            out.push_str(name);
            let mut text = None;
            let mut children = Vec::new();
            for (key, value) in map {
                match key.strip_prefix('@') {
                    Some(attribute) => {
                        out.push(' ');
                        out.push_str(attribute);
                        out.push_str("=\"");
                        out.push_str(&escape(scalar(value).unwrap_or_default()));
                        out.push('"');
                    }
                    None if key == "$" => text = scalar(value),
                    None => children.push((key, value)),
                }
            }
            if text.is_none() && children.is_empty() {
                out.push_str("/>");
                return;
            }
            out.push('>');
            if let Some(text) = text {
                out.push_str(&escape(text));
            }
            for (key, value) in children {
                write_element(out, key, value);
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str("/>");
        }
        scalar_value => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&escape(scalar(scalar_value).unwrap_or_default()));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
}
