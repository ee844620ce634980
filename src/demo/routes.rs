//! Routing and responses of the four demo services: a pure function from
//! method and URI to a complete response, so it can be tested without
//! sockets and the server stays about networking only.

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::Service;
use super::data::{Dataset, dataset};

/// Products per catalogue page of `GET /products`.
pub const PAGE_SIZE: usize = 100;

/// The response of `service` to a request, with body, `content-type` and
/// `content-length` set.
pub fn respond(service: Service, method: &Method, uri: &Uri) -> Response<Bytes> {
    let path = uri.path();
    let Some(target) = target(service, path) else {
        return problem(StatusCode::NOT_FOUND, format!("no resource at {path}"));
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let data = dataset();
    let query = uri.query().unwrap_or("");
    match target {
        Target::Health => body(StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
        Target::Item(id) => item(service, data, id),
        Target::Collection => collection(service, data, query)
            .unwrap_or_else(|detail| problem(StatusCode::BAD_REQUEST, detail)),
    }
}

enum Target<'a> {
    Health,
    Collection,
    Item(&'a str),
}

/// What a path names: `/healthz`, the service's collection, or one item.
fn target(service: Service, path: &str) -> Option<Target<'_>> {
    if path == "/healthz" {
        return Some(Target::Health);
    }
    let rest = path
        .strip_prefix('/')?
        .strip_prefix(collection_of(service))?;
    match rest {
        "" => Some(Target::Collection),
        _ => rest.strip_prefix('/').map(Target::Item),
    }
}

/// The first path segment each service serves.
fn collection_of(service: Service) -> &'static str {
    match service {
        Service::Customers => "customers",
        Service::Orders => "orders",
        Service::Shipping => "shipments",
        Service::Products => "products",
    }
}

/// `GET /{collection}/{id}`; anything but a known decimal id is a 404.
fn item(service: Service, data: &Dataset, id: &str) -> Response<Bytes> {
    let found = parse_id(id).and_then(|n| match service {
        Service::Customers => data.customer(n).map(json),
        Service::Orders => data.order(n).map(json),
        Service::Shipping => data.shipment(n).map(json),
        Service::Products => data.product(n).map(json),
    });
    found.unwrap_or_else(|| {
        let kind = collection_of(service).trim_end_matches('s');
        problem(StatusCode::NOT_FOUND, format!("{kind} {id} not found"))
    })
}

/// `GET /{collection}?…`; `Err` is the detail of a 400 response.
fn collection(service: Service, data: &Dataset, query: &str) -> Result<Response<Bytes>, String> {
    Ok(match service {
        Service::Customers => {
            let ids = ids(query)?.unwrap_or_default();
            json(
                &ids.iter()
                    .filter_map(|&id| data.customer(id))
                    .collect::<Vec<_>>(),
            )
        }
        Service::Orders => json(data.orders_of(customer_id(query)?)),
        Service::Shipping => json(data.shipments_of(customer_id(query)?)),
        Service::Products => match ids(query)? {
            Some(ids) => json(
                &ids.iter()
                    .filter_map(|&id| data.product(id))
                    .collect::<Vec<_>>(),
            ),
            None => {
                let page = match param(query, "page") {
                    None => 1,
                    Some(p) => parse_id(&p).ok_or("page must be a positive integer")?,
                };
                let start = usize::try_from(page - 1)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(PAGE_SIZE);
                let products = data.products();
                let page = products.get(start..).unwrap_or(&[]);
                json(&page[..page.len().min(PAGE_SIZE)])
            }
        },
    })
}

/// The required `customer_id` parameter of the orders and shipping lists.
fn customer_id(query: &str) -> Result<u64, String> {
    let value = param(query, "customer_id").ok_or("customer_id is required")?;
    parse_id(&value).ok_or_else(|| format!("customer_id {value:?} is not a positive integer"))
}

/// The ids of every `ids=` parameter, comma-separated, each kept once in
/// first-seen order; `None` when there is no `ids` parameter at all.
fn ids(query: &str) -> Result<Option<Vec<u64>>, String> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    let mut present = false;
    for (_, value) in params(query).filter(|(key, _)| key == "ids") {
        present = true;
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id =
                parse_id(part).ok_or_else(|| format!("id {part:?} is not a positive integer"))?;
            if seen.insert(id) {
                ids.push(id);
            }
        }
    }
    Ok(present.then_some(ids))
}

/// A plain decimal id; rejects signs, blanks and overflow, which `str::parse`
/// would partly accept (`+42`).
fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// The first value of a query parameter, percent-decoded.
fn param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    params(query).find(|(key, _)| key == name).map(|(_, v)| v)
}

/// Percent-decoded `key=value` pairs; a bare `key` has an empty value.
fn params(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s| percent_decode_str(s).decode_utf8_lossy();
        (decode(key), decode(value))
    })
}

/// A 200 `application/json` response.
fn json<T: Serialize + ?Sized>(value: &T) -> Response<Bytes> {
    match serde_json::to_vec(value) {
        Ok(bytes) => body(StatusCode::OK, "application/json", bytes.into()),
        // The dataset's types serialise infallibly; kept as a 500, not a panic.
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// An RFC 9457 problem details response.
fn problem(status: StatusCode, detail: String) -> Response<Bytes> {
    #[derive(Serialize)]
    struct Problem<'a> {
        r#type: &'a str,
        title: &'a str,
        status: u16,
        detail: String,
    }
    let problem = Problem {
        r#type: "about:blank",
        title: status.canonical_reason().unwrap_or(""),
        status: status.as_u16(),
        detail,
    };
    // Strings and numbers only, so serialising cannot fail.
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    body(status, "application/problem+json", bytes.into())
}

fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    *response.body_mut() = bytes;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json as j};

    fn get(service: Service, uri: &str) -> (StatusCode, String, Value) {
        call(service, Method::GET, uri)
    }

    fn call(service: Service, method: Method, uri: &str) -> (StatusCode, String, Value) {
        let uri: Uri = uri.parse().expect("valid test URI");
        let response = respond(service, &method, &uri);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let length = &response.headers()[CONTENT_LENGTH];
        assert_eq!(length.to_str().unwrap(), response.body().len().to_string());
        let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status(), content_type, body)
    }

    fn to_value<T: Serialize>(value: T) -> Value {
        serde_json::to_value(value).expect("serialisable")
    }

    #[test]
    fn customers() {
        let data = dataset();
        let (status, ct, body) = get(Service::Customers, "/customers/42");
        assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
        assert_eq!(body, to_value(data.customer(42)));
        let (status, _, body) = get(Service::Customers, "/customers?ids=3,99999,1,3,%202");
        assert_eq!(status, StatusCode::OK);
        let expected: Vec<_> = [3, 1, 2].iter().map(|&id| data.customer(id)).collect();
        assert_eq!(body, to_value(expected));
        assert_eq!(get(Service::Customers, "/customers").2, j!([]));
        assert_eq!(get(Service::Customers, "/customers?ids=").2, j!([]));
        for bad in [
            "/customers/0",
            "/customers/10001",
            "/customers/abc",
            "/customers/+4",
        ] {
            let (status, ct, body) = get(Service::Customers, bad);
            assert_eq!(
                (status, ct.as_str()),
                (StatusCode::NOT_FOUND, "application/problem+json")
            );
            assert_eq!(body["status"], 404);
        }
        assert_eq!(
            get(Service::Customers, "/customers?ids=1,x").0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn orders_and_shipments() {
        let data = dataset();
        let (status, _, body) = get(Service::Orders, "/orders?customer_id=42");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, to_value(data.orders_of(42)));
        assert_eq!(get(Service::Orders, "/orders/7").2, to_value(data.order(7)));
        assert_eq!(get(Service::Orders, "/orders?customer_id=10001").2, j!([]));
        assert_eq!(get(Service::Orders, "/orders").0, StatusCode::BAD_REQUEST);
        assert_eq!(
            get(Service::Orders, "/orders?customer_id=-1").0,
            StatusCode::BAD_REQUEST
        );
        let (_, _, body) = get(Service::Shipping, "/shipments?customer_id=42");
        assert_eq!(body, to_value(data.shipments_of(42)));
        assert_eq!(
            get(Service::Shipping, "/shipments/1").2,
            to_value(data.shipment(1))
        );
        assert_eq!(
            get(Service::Shipping, "/shipments/0").0,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn products() {
        let data = dataset();
        let ids = |body: Value| -> Vec<u64> {
            body.as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(
            get(Service::Products, "/products/5").2,
            to_value(data.product(5))
        );
        assert_eq!(
            ids(get(Service::Products, "/products?ids=3,1,3,2,5000").2),
            [3, 1, 2]
        );
        assert_eq!(
            ids(get(Service::Products, "/products?ids=3&ids=1").2),
            [3, 1]
        );
        assert_eq!(get(Service::Products, "/products?ids=").2, j!([]));
        assert_eq!(get(Service::Products, "/products?ids").2, j!([]));
        let page1 = ids(get(Service::Products, "/products").2);
        assert_eq!(page1, (1..=100).collect::<Vec<_>>());
        assert_eq!(ids(get(Service::Products, "/products?page=1").2), page1);
        assert_eq!(ids(get(Service::Products, "/products?page=10").2)[99], 1000);
        assert_eq!(get(Service::Products, "/products?page=11").2, j!([]));
        assert_eq!(
            get(Service::Products, &format!("/products?page={}", u64::MAX)).2,
            j!([])
        );
        assert_eq!(
            get(Service::Products, "/products?page=0").0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn health_unknown_paths_and_methods() {
        let response = respond(Service::Orders, &Method::GET, &Uri::from_static("/healthz"));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), b"ok");
        for (service, path) in [
            (Service::Orders, "/customers/1"),
            (Service::Customers, "/"),
            (Service::Customers, "/customers/"),
            (Service::Customers, "/customers/1/orders"),
            (Service::Products, "/productsx"),
        ] {
            let (status, ct, _) = get(service, path);
            assert_eq!(
                (status, ct.as_str()),
                (StatusCode::NOT_FOUND, "application/problem+json")
            );
        }
        let uri = Uri::from_static("/customers/1");
        let response = respond(Service::Customers, &Method::POST, &uri);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            call(Service::Customers, Method::HEAD, "/customers/1").0,
            StatusCode::OK
        );
    }
}
