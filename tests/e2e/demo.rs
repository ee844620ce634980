//! The demo services behind examples/shop.yaml: the gateway's answers match
//! the generated dataset.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard::demo::{self, DemoOptions, DemoServices, Service, dataset};

/// The demo services on ephemeral ports without latency, and the gateway
/// serving examples/shop.yaml pointed at them.
async fn shop() -> (DemoServices, TestGateway) {
    let services = demo::start(DemoOptions {
        latency: Duration::ZERO,
        base_port: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop.yaml"))
            .unwrap();
    for (service, port) in Service::ALL.into_iter().zip(9101..) {
        let from = format!("http://127.0.0.1:{port}");
        assert!(yaml.contains(&from), "shop.yaml has no {from}");
        yaml = yaml.replace(&from, &format!("http://{}", services.addr(service)));
    }
    let gw = TestGateway::start(&yaml).await;
    (services, gw)
}

fn to_json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap()
}

/// The distinct product ids of a customer's orders, first-seen order.
fn product_ids_of(customer: u64) -> Vec<u64> {
    let mut ids = Vec::new();
    for o in dataset().orders_of(customer) {
        if !ids.contains(&o.product_id) {
            ids.push(o.product_id);
        }
    }
    ids
}

fn products(ids: &[u64]) -> Vec<Value> {
    ids.iter()
        .map(|&id| to_json(dataset().product(id).unwrap()))
        .collect()
}

/// Sorts product objects by id, for comparing as sets.
fn by_id(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|p| p["id"].as_u64());
    v
}

// The summary of customer 42 holds their record, orders, shipments and
// exactly the distinct products their orders reference.
#[tokio::test]
async fn summary_matches_dataset() {
    let (_services, gw) = shop().await;
    let r = gw.get("/customers/42/summary").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    for key in ["customer", "orders", "shipping", "products"] {
        assert!(body.get(key).is_some(), "no `{key}` in {body}");
    }
    let ds = dataset();
    assert!(!ds.orders_of(42).is_empty(), "customer 42 has no orders");
    assert_eq!(body["customer"], to_json(ds.customer(42).unwrap()));
    assert_eq!(body["orders"], to_json(ds.orders_of(42)));
    assert_eq!(body["shipping"], to_json(ds.shipments_of(42)));
    let got = body["products"]
        .as_array()
        .expect("products is a list")
        .clone();
    let expected = products(&product_ids_of(42));
    assert_eq!(got.len(), expected.len(), "{got:?}");
    assert_eq!(by_id(got), by_id(expected));
    assert_eq!(body["missing"], json!([]));
    assert_eq!(r.header("switchyard-missing"), "");
}

// The for_each route returns the same products, in first-seen order.
#[tokio::test]
async fn per_item_products_match_dataset_in_first_seen_order() {
    let (_services, gw) = shop().await;
    let r = gw.get("/customers/42/products").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let expected = products(&product_ids_of(42));
    assert_eq!(body["products"], Value::Array(expected.clone()));
    assert_eq!(body["product_count"], expected.len());
    assert_eq!(body["customer_id"], "42");
}

// An unknown customer is a 404 problem+json naming the customer call.
#[tokio::test]
async fn unknown_customer_is_404_problem() {
    let (_services, gw) = shop().await;
    let r = gw.get("/customers/99999999/summary").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let p = r.json();
    assert_eq!(p["status"], 404, "{p}");
    assert_eq!(p["call"], "customer", "{p}");
    assert_eq!(p["upstream"], "customers", "{p}");
}
