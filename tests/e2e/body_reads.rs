//! Bodies are copied whole as they came and parsed only as far as the route
//! reads them: whatever mix of whole copies, deep steps, indices, projections,
//! `for_each` a route uses on one body, every reader sees what a full parse
//! would give. (A filter on the body itself, like `orders.body|count`, reads
//! it whole; these routes avoid that on purpose.)

use crate::common::*;
use serde_json::json;

/// Formatting, an exact decimal and a number past u64 that a whole copy keeps.
const ORDERS: &str = r#"[ {"product_id": 7, "status": "new", "price": 1.50, "note": "x"},
  {"product_id": 9, "status": "old", "price": 10.0, "big": 123456789012345678901234567890} ]"#;

async fn upstreams() -> (TestUpstream, TestUpstream) {
    let orders = TestUpstream::fixed(Reply::raw("application/json", ORDERS)).await;
    let echo = TestUpstream::start(|seen| Reply::json(json!({ "uri": seen.uri }))).await;
    (orders, echo)
}

fn config(orders: &TestUpstream, echo: &TestUpstream) -> String {
    format!(
        r#"
upstreams:
  orders: {{ url: "{}" }}
  echo: {{ url: "{}" }}
routes:
  - get: /mixed
    calls:
      orders: {{ get: "orders:/orders" }}
      last:   {{ get: "echo:/last/{{orders.body[-1].product_id}}" }}
      ids:    {{ get: "echo:/ids?ids={{orders.body[*].product_id|join}}" }}
      each:
        for_each: "orders.body[*].status"
        get: "echo:/status/{{item}}"
        concurrency: 2
    respond:
      whole: orders.body
      first_status: orders.body[0].status
      prices: orders.body[*].price
      note: orders.body[0].note
      missing: orders.body[1].note
      last: last.body.uri
      ids: ids.body.uri
      each: each.body[*].uri
  - get: /merged
    calls:
      orders: {{ get: "orders:/orders" }}
      last:   {{ get: "echo:/last/{{orders.body[0].product_id}}" }}
    merge: [last, orders]
"#,
        orders.url(),
        echo.url()
    )
}

#[tokio::test]
async fn partial_reads_agree_with_a_full_parse_and_whole_copies_keep_the_text() {
    let (orders, echo) = upstreams().await;
    let gw = TestGateway::start(&config(&orders, &echo)).await;
    let r = gw.get("/mixed").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The whole body is the upstream's text, spaces and digits included.
    assert!(r.text().contains(ORDERS), "{}", r.text());
    let v = r.json();
    assert_eq!(v["first_status"], "new");
    assert_eq!(v["prices"].to_string(), "[1.50,10.0]");
    assert_eq!(v["note"], "x");
    assert_eq!(v["missing"], json!(null));
    assert_eq!(v["last"], "/last/9");
    assert_eq!(v["ids"], "/ids?ids=7,9");
    assert_eq!(v["each"], json!(["/status/new", "/status/old"]));
    assert_eq!(
        v["whole"][1]["big"].to_string(),
        "123456789012345678901234567890"
    );
}

#[tokio::test]
async fn a_merged_body_is_read_whole_even_when_another_call_reads_a_part() {
    let (orders, echo) = upstreams().await;
    let gw = TestGateway::start(&config(&orders, &echo)).await;
    let r = gw.get("/merged").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["uri"], "/last/7");
    assert_eq!(v["orders"][0]["note"], "x");
    assert_eq!(v["orders"][1]["price"].to_string(), "10.0");
}
