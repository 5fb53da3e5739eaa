//! The narrative rules of R4 (`Narrative.div`, invariants `txt-1` and
//! `txt-2`): a well-formed XHTML `div` of basic formatting elements and
//! attributes, with some text or an image.
//!
//! The same rules keep active content out of every client that renders
//! narrative: no scripts, no event-handler attributes (none is on the
//! allowed list), no `javascript:` links and no style expressions.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// The elements `txt-1` allows (HTML 4.0 basic formatting, links, images).
const ELEMENTS: &[&str] = &[
    "a",
    "abbr",
    "acronym",
    "b",
    "big",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "col",
    "colgroup",
    "dd",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "samp",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "tt",
    "ul",
    "var",
];

/// The attributes `txt-1` allows, plus the namespace declaration and
/// `xml:lang`.
const ATTRIBUTES: &[&str] = &[
    "abbr",
    "accesskey",
    "align",
    "alt",
    "axis",
    "bgcolor",
    "border",
    "cellhalign",
    "cellpadding",
    "cellspacing",
    "cellvalign",
    "char",
    "charoff",
    "charset",
    "cite",
    "class",
    "colspan",
    "compact",
    "coords",
    "dir",
    "frame",
    "headers",
    "height",
    "href",
    "hreflang",
    "hspace",
    "id",
    "lang",
    "longdesc",
    "name",
    "nowrap",
    "rel",
    "rev",
    "rowspan",
    "rules",
    "scope",
    "shape",
    "span",
    "src",
    "start",
    "style",
    "summary",
    "tabindex",
    "title",
    "type",
    "valign",
    "value",
    "vspace",
    "width",
    "xmlns",
    "xml:lang",
];

/// Checks a `Narrative.div`; the error says what is wrong, for a person.
pub(crate) fn check_div(xhtml: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(xhtml);
    let mut depth = 0usize;
    let mut seen_root = false;
    let mut has_content = false;
    loop {
        let event = reader.read_event().map_err(|e| format!("not well-formed XML ({e})"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if depth == 0 {
                    if seen_root {
                        return Err("there must be exactly one root element, a div".into());
                    }
                    root(e)?;
                    seen_root = true;
                }
                element(e, &mut has_content)?;
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) => {
                let blank = t.chars().all(char::is_whitespace);
                if depth == 0 && !blank {
                    return Err("text outside the root div".into());
                }
                has_content |= !blank;
            }
            Event::CData(_) | Event::GeneralRef(_) if depth > 0 => has_content = true,
            Event::Comment(_) => {}
            Event::Eof if depth > 0 => return Err("an element is not closed".into()),
            Event::Eof => break,
            Event::DocType(_) | Event::PI(_) | Event::Decl(_) => {
                return Err("declarations, DOCTYPEs and processing instructions are not allowed".into());
            }
            _ => return Err("content outside the root div".into()),
        }
    }
    if !seen_root {
        return Err("the narrative must be a div element".into());
    }
    if !has_content {
        return Err("txt-2: the narrative must have some non-whitespace content".into());
    }
    Ok(())
}

fn root(e: &BytesStart<'_>) -> Result<(), String> {
    if e.name().as_ref() != "div" {
        return Err("the root element must be a div".into());
    }
    let ns = e.attributes().flatten().find(|a| a.key.as_ref() == "xmlns").map(|a| a.value.into_owned());
    if ns.as_deref() != Some(XHTML_NS) {
        return Err("the root div must declare xmlns=\"http://www.w3.org/1999/xhtml\"".into());
    }
    Ok(())
}

fn element(e: &BytesStart<'_>, has_content: &mut bool) -> Result<(), String> {
    let qname = e.name();
    let name: &str = qname.as_ref();
    if !ELEMENTS.contains(&name) {
        return Err(format!("the element <{}> is not allowed", shorten(name)));
    }
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("a malformed attribute ({err})"))?;
        let key: &str = attr.key.as_ref();
        if !ATTRIBUTES.contains(&key) {
            return Err(format!("the attribute '{}' is not allowed on <{name}>", shorten(key)));
        }
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| format!("a malformed attribute value ({err})"))?;
        if matches!(key, "href" | "src" | "style" | "longdesc" | "cite") && is_active(key, &value) {
            return Err(format!("the {key} attribute of <{name}> holds active content"));
        }
        if name == "img" && key == "src" {
            *has_content = true;
        }
    }
    Ok(())
}

/// Script URLs and CSS expressions: what would run in a browser.
fn is_active(key: &str, value: &str) -> bool {
    let folded: String =
        value.chars().filter(|c| !c.is_whitespace() && !c.is_control()).collect::<String>().to_lowercase();
    if folded.contains("javascript:") || folded.contains("vbscript:") {
        return true;
    }
    match key {
        "style" => folded.contains("expression("),
        "href" => folded.starts_with("data:") && !folded.starts_with("data:image/"),
        _ => false,
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIV: &str = r#"<div xmlns="http://www.w3.org/1999/xhtml">"#;

    #[test]
    fn a_plain_narrative_with_a_table_and_an_image_is_allowed() {
        let ok = format!(
            r##"{DIV}<p>Ann <b>Smith</b> &amp; co &#160;</p><table><tr><td colspan="2">x</td></tr></table><img src="#pic"/></div>"##
        );
        assert_eq!(check_div(&ok), Ok(()));
        assert_eq!(check_div(&format!(r#"{DIV}<img src="data:image/png;base64,AAAA"/></div>"#)), Ok(()));
    }

    #[test]
    fn scripts_handlers_and_script_urls_are_refused() {
        for bad in [
            format!("{DIV}<script>alert(1)</script></div>"),
            format!(r#"{DIV}<p onclick="alert(1)">x</p></div>"#),
            format!(r#"{DIV}<a href="java&#x09;script:alert(1)">x</a></div>"#),
            format!(r#"{DIV}<a href=" JavaScript:alert(1)">x</a></div>"#),
            format!(r#"{DIV}<a href="data:text/html,&lt;script&gt;">x</a></div>"#),
            format!(r#"{DIV}<p style="background:url(javascript:alert(1))">x</p></div>"#),
            format!(r#"{DIV}<p style="width:expression(alert(1))">x</p></div>"#),
            format!("{DIV}<iframe src=\"x\"></iframe></div>"),
            format!("{DIV}<svg><script/></svg></div>"),
        ] {
            assert!(check_div(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_or_rootless_or_empty_narrative_is_refused() {
        for bad in [
            "plain text".to_owned(),
            "<div>no namespace</div>".to_owned(),
            format!("{DIV}<p>unclosed</div>"),
            format!("{DIV}<p>x</p></div><div/>"),
            format!("{DIV}   </div>"),
            "<span xmlns=\"http://www.w3.org/1999/xhtml\">x</span>".to_owned(),
            format!("<!DOCTYPE x>{DIV}x</div>"),
        ] {
            assert!(check_div(&bad).is_err(), "{bad}");
        }
    }
}
