//! The expression language of templates and response shapes.
//!
//! `orders.body[*].product_id|distinct|join` — a root, steps, filters. Written
//! by hand because it is the product: it must resolve names against the route at
//! load time (which calls a call depends on) and tell, before any request,
//! whether a value is a list.

use http::HeaderName;

/// Index of a call within its route.
pub type CallId = usize;

/// Where an expression's value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// A path parameter, by its index in the route's parameter list.
    Path(usize),
    /// The first value of a query parameter.
    Query(String),
    /// A client request header.
    Header(HeaderName),
    /// An earlier call's JSON body.
    CallBody(CallId),
    /// An earlier call's HTTP status.
    CallStatus(CallId),
    /// One of an earlier call's response headers.
    CallHeader(CallId, HeaderName),
    /// The current element of a `for_each` call.
    Item,
    /// The gateway's list of failed optional calls (response shapes only).
    Errors,
    /// A string literal.
    Literal(String),
}

/// One step into a JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `.name` or `["name"]`.
    Field(String),
    /// `[n]`; negative counts from the end.
    Index(i64),
    /// `[*]`: apply the rest to every element and collect the results.
    All,
}

/// A function applied to the value, left to right.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// A list into one string, elements separated by the separator.
    Join(String),
    /// Drop repeated values, keeping first-seen order.
    Distinct,
    /// The first element of a list.
    First,
    /// The number of elements of a list.
    Count,
}

/// A parsed, name-resolved expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// Where the value comes from.
    pub root: Root,
    /// Steps into the root value.
    pub steps: Vec<Step>,
    /// Filters applied to the result.
    pub filters: Vec<Filter>,
    /// The source text, for messages.
    pub text: String,
}

/// Separators `join` accepts: each is safe to write unencoded in a URL.
pub const JOIN_SEPARATORS: &[&str] = &[",", ";", "|", "+", ":", " "];

/// What names an expression may refer to.
pub trait Scope {
    /// Index of a path parameter.
    fn path_param(&self, name: &str) -> Option<usize>;
    /// Index of a call of this route.
    fn call(&self, name: &str) -> Option<CallId>;
    /// Whether `item` is in scope (inside a `for_each` call).
    fn has_item(&self) -> bool;
    /// Whether `$errors` is in scope (response shapes).
    fn has_errors(&self) -> bool;
}

impl Expr {
    /// The calls this expression reads from.
    pub fn call_dependency(&self) -> Option<CallId> {
        match self.root {
            Root::CallBody(c) | Root::CallStatus(c) | Root::CallHeader(c, _) => Some(c),
            _ => None,
        }
    }

    /// The call whose whole body this is (`call.body`, no steps, no
    /// filters): shapes copy such a body as its text instead of reading it.
    pub fn whole_body(&self) -> Option<CallId> {
        match self.root {
            Root::CallBody(c) if self.steps.is_empty() && self.filters.is_empty() => Some(c),
            _ => None,
        }
    }

    /// Whether the value is known at load time to be a list (before `join`,
    /// `first` or `count` turn it into one value).
    pub fn yields_list(&self, list_calls: &dyn Fn(CallId) -> bool) -> bool {
        let mut list = match self.root {
            Root::CallBody(c) => list_calls(c) && self.steps.is_empty(),
            Root::Errors => true,
            _ => false,
        };
        if self.steps.contains(&Step::All) {
            list = true;
        }
        for filter in &self.filters {
            list = matches!(filter, Filter::Distinct) && list;
        }
        list
    }

    /// The expression without its last filter, when that filter is `join`:
    /// URL templates encode each element before joining.
    pub fn split_join(&self) -> Option<(&str, &[Filter])> {
        match self.filters.split_last() {
            Some((Filter::Join(sep), rest)) => Some((sep.as_str(), rest)),
            _ => None,
        }
    }
}

/// Parses and resolves one expression.
pub fn parse(text: &str, scope: &dyn Scope) -> Result<Expr, String> {
    let mut p = Parser {
        src: text.trim(),
        at: 0,
    };
    if p.src.is_empty() {
        return Err("empty expression".into());
    }
    let root_and_steps = p.root(scope)?;
    let (root, steps) = root_and_steps;
    let mut filters = Vec::new();
    p.skip_ws();
    while p.eat('|') {
        p.skip_ws();
        filters.push(p.filter()?);
        p.skip_ws();
    }
    if p.at < p.src.len() {
        return Err(format!(
            "unexpected `{}` in expression `{}`",
            &p.src[p.at..],
            p.src
        ));
    }
    if matches!(root, Root::Literal(_)) && (!steps.is_empty() || !filters.is_empty()) {
        return Err(format!(
            "a string literal takes no steps or filters: `{}`",
            p.src
        ));
    }
    Ok(Expr {
        root,
        steps,
        filters,
        text: p.src.to_string(),
    })
}

struct Parser<'a> {
    src: &'a str,
    at: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        // Whitespace may be more than one byte (a no-break space pasted from
        // a web page): step by the character, never into its middle.
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.at += c.len_utf8();
        }
    }
    fn name(&mut self) -> Result<&str, String> {
        let start = self.at;
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        if start == self.at {
            return Err(match self.peek() {
                Some(c) => format!("expected a name at `{}` in `{}`", c, self.src),
                None => format!("expected a name at the end of `{}`", self.src),
            });
        }
        Ok(&self.src[start..self.at])
    }
    /// `'text'` or `"text"`, no escapes.
    fn quoted(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a quoted string in `{}`", self.src)),
        };
        self.at += 1;
        let rest = &self.src[self.at..];
        let end = rest
            .find(quote)
            .ok_or_else(|| format!("unterminated string in `{}`", self.src))?;
        let s = rest[..end].to_string();
        self.at += end + 1;
        Ok(s)
    }

    fn root(&mut self, scope: &dyn Scope) -> Result<(Root, Vec<Step>), String> {
        if matches!(self.peek(), Some('\'' | '"')) {
            return Ok((Root::Literal(self.quoted()?), Vec::new()));
        }
        if self.eat('$') {
            let name = self.name()?;
            if name != "errors" || !scope.has_errors() {
                return Err(format!(
                    "`${name}` is not known here (only `$errors`, in response shapes)"
                ));
            }
            return Ok((Root::Errors, self.steps()?));
        }
        let head = self.name()?.to_string();
        let root = match head.as_str() {
            "item" if scope.has_item() => Root::Item,
            "item" => return Err("`item` is only known inside a `for_each` call".into()),
            "path" => {
                let name = self.member(&head)?;
                Root::Path(
                    scope
                        .path_param(&name)
                        .ok_or_else(|| format!("the route's path has no parameter `{{{name}}}`"))?,
                )
            }
            "query" => Root::Query(self.member(&head)?),
            "headers" => Root::Header(header_name(&self.member(&head)?)?),
            call_name => {
                let call = scope.call(call_name).ok_or_else(|| {
                    format!(
                        "unknown call `{call_name}` (roots are path, query, headers, item, or a call of this route)"
                    )
                })?;
                let part = self.member(call_name)?;
                match part.as_str() {
                    "body" => Root::CallBody(call),
                    "status" => Root::CallStatus(call),
                    "headers" => Root::CallHeader(call, header_name(&self.member("headers")?)?),
                    other => {
                        return Err(format!(
                            "a call has `body`, `status` and `headers`, not `{other}` (write `{call_name}.body.{other}`)"
                        ));
                    }
                }
            }
        };
        let steps = self.steps()?;
        if !steps.is_empty() && !matches!(root, Root::CallBody(_) | Root::Item | Root::Errors) {
            return Err(format!(
                "only a call's body and `item` can be stepped into: `{}`",
                self.src
            ));
        }
        Ok((root, steps))
    }

    /// `.name` after a namespace.
    fn member(&mut self, namespace: &str) -> Result<String, String> {
        if !self.eat('.') {
            return Err(format!(
                "expected `.` after `{namespace}` in `{}`",
                self.src
            ));
        }
        Ok(self.name()?.to_string())
    }

    fn steps(&mut self) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        loop {
            if self.eat('.') {
                steps.push(Step::Field(self.name()?.to_string()));
            } else if self.eat('[') {
                let step = if self.eat('*') {
                    Step::All
                } else if matches!(self.peek(), Some('\'' | '"')) {
                    Step::Field(self.quoted()?)
                } else {
                    let start = self.at;
                    self.eat('-');
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.at += 1;
                    }
                    let digits = &self.src[start..self.at];
                    Step::Index(digits.parse().map_err(|_| {
                        format!(
                            "expected `*`, a number or a quoted key inside `[]` in `{}`",
                            self.src
                        )
                    })?)
                };
                if !self.eat(']') {
                    return Err(format!("expected `]` in `{}`", self.src));
                }
                steps.push(step);
            } else {
                return Ok(steps);
            }
        }
    }

    fn filter(&mut self) -> Result<Filter, String> {
        let name = self.name()?.to_string();
        let arg = if self.eat('(') {
            let a = self.quoted()?;
            if !self.eat(')') {
                return Err(format!("expected `)` in `{}`", self.src));
            }
            Some(a)
        } else {
            None
        };
        match (name.as_str(), arg) {
            ("join", None) => Ok(Filter::Join(",".into())),
            ("join", Some(sep)) if JOIN_SEPARATORS.contains(&sep.as_str()) => Ok(Filter::Join(sep)),
            ("join", Some(sep)) => Err(format!(
                "`join` separator `{sep}` is not one of {}",
                JOIN_SEPARATORS
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
            ("distinct", None) => Ok(Filter::Distinct),
            ("first", None) => Ok(Filter::First),
            ("count", None) => Ok(Filter::Count),
            ("distinct" | "first" | "count", Some(_)) => Err(format!("`{name}` takes no argument")),
            _ => Err(format!(
                "unknown filter `{name}` (filters: join, distinct, first, count)"
            )),
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestScope;
    impl Scope for TestScope {
        fn path_param(&self, name: &str) -> Option<usize> {
            (name == "id").then_some(0)
        }
        fn call(&self, name: &str) -> Option<CallId> {
            ["customer", "orders"].iter().position(|c| *c == name)
        }
        fn has_item(&self) -> bool {
            true
        }
        fn has_errors(&self) -> bool {
            false
        }
    }

    fn ok(text: &str) -> Expr {
        parse(text, &TestScope).unwrap_or_else(|e| panic!("{text}: {e}"))
    }
    fn err(text: &str) -> String {
        parse(text, &TestScope).expect_err(text)
    }

    #[test]
    fn parses_roots_steps_and_filters() {
        let e = ok("orders.body[*].product_id|distinct|join(';')");
        assert_eq!(e.root, Root::CallBody(1));
        assert_eq!(e.steps, vec![Step::All, Step::Field("product_id".into())]);
        assert_eq!(e.filters, vec![Filter::Distinct, Filter::Join(";".into())]);
        assert_eq!(ok("path.id").root, Root::Path(0));
        assert_eq!(
            ok("headers.X-Tenant").root,
            Root::Header(HeaderName::from_static("x-tenant"))
        );
        assert_eq!(ok("customer.status").root, Root::CallStatus(0));
        assert_eq!(ok("'v1'").root, Root::Literal("v1".into()));
        assert_eq!(
            ok("item[\"odd key\"][-1]").steps,
            vec![Step::Field("odd key".into()), Step::Index(-1)]
        );
    }

    #[test]
    fn rejects_unknown_names_with_a_reason() {
        assert!(err("nope.body").contains("unknown call `nope`"));
        assert!(err("path.name").contains("no parameter `{name}`"));
        assert!(err("orders.id").contains("write `orders.body.id`"));
        assert!(err("orders.body|sort").contains("unknown filter `sort`"));
        assert!(err("orders.body|join('&')").contains("separator"));
        assert!(err("$errors").contains("$errors"));
        assert!(err("orders.body[x]").contains("inside `[]`"));
        assert!(err("path.id extra").contains("unexpected"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn knows_when_a_value_is_a_list() {
        let no_list_calls = |_| false;
        assert!(ok("orders.body[*].id").yields_list(&no_list_calls));
        assert!(ok("orders.body[*].id|distinct").yields_list(&no_list_calls));
        assert!(!ok("orders.body[*].id|join").yields_list(&no_list_calls));
        assert!(!ok("orders.body[*].id|count").yields_list(&no_list_calls));
        assert!(!ok("orders.body").yields_list(&no_list_calls));
        assert!(ok("orders.body").yields_list(&|c| c == 1));
    }
}
