use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn aggregates_two_calls_into_one_object() {
    let a = TestUpstream::fixed(Reply::json(json!({"name": "ada"}))).await;
    let b = TestUpstream::fixed(Reply::json(json!([1, 2]))).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  b: {{ url: "{}" }}
routes:
  - get: /x/{{id}}
    calls:
      user: {{ get: "a:/users/{{path.id}}" }}
      list: {{ get: "b:/lists?user={{path.id}}" }}
"#,
        a.url(),
        b.url()
    ))
    .await;
    let r = gw.get("/x/7").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"user": {"name": "ada"}, "list": [1, 2]}));
    assert_eq!(a.seen()[0].uri, "/users/7");
    assert_eq!(b.seen()[0].uri, "/lists?user=7");
    assert!(r.header("server-timing").contains("user;dur="));
}
