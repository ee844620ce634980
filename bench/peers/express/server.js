// The Node.js/Express aggregator that Switchyard's summary route is measured
// against (bench/run.sh): the same route as examples/shop.yaml's
// `GET /customers/{id}/summary`, written the way the article recommends —
// independent calls at once with Promise.all, a rate limiter in front, and
// keep-alive connections to the services.
//
//   node server.js [PORT]   (or PORT=...; upstream base URLs from
//   CUSTOMERS_URL, ORDERS_URL, SHIPPING_URL, PRODUCTS_URL)
"use strict";

const express = require("express");
const { rateLimit } = require("express-rate-limit");
const { Agent, request } = require("undici");

const port = Number(process.argv[2] || process.env.PORT || 18300);
const upstream = {
  customers: process.env.CUSTOMERS_URL || "http://127.0.0.1:9101",
  orders: process.env.ORDERS_URL || "http://127.0.0.1:9102",
  shipping: process.env.SHIPPING_URL || "http://127.0.0.1:9103",
  products: process.env.PRODUCTS_URL || "http://127.0.0.1:9104",
};
// shop.yaml gives every upstream call 300 ms.
const CALL_TIMEOUT_MS = 300;

// undici is Node's own HTTP client (global fetch is built on it); its
// `request` skips fetch's WHATWG stream layer, so it is the fastest
// idiomatic choice. The agent keeps connections alive and pools them per
// origin, without a cap, like Switchyard's pools.
const dispatcher = new Agent({ keepAliveTimeout: 60_000, pipelining: 1 });

class CallError extends Error {
  constructor(call, kind, message, status) {
    super(message);
    Object.assign(this, { call, kind, status });
  }
}

// GET a JSON body; anything but a 200 with JSON is a CallError.
async function getJson(call, url, headers) {
  let res;
  try {
    res = await request(url, {
      dispatcher,
      headers,
      headersTimeout: CALL_TIMEOUT_MS,
      bodyTimeout: CALL_TIMEOUT_MS,
    });
  } catch (err) {
    const kind = err.code === "UND_ERR_HEADERS_TIMEOUT" ? "timeout" : "connect";
    throw new CallError(call, kind, err.message);
  }
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new CallError(call, "status", `${call} answered ${res.statusCode}`, res.statusCode);
  }
  return res.body.json();
}

// The failure as Switchyard's `$errors` lists it.
function missingEntry(err) {
  const entry = { call: err.call, upstream: err.call, kind: err.kind || "internal", message: err.message };
  if (err.status !== undefined) entry.status = err.status;
  return entry;
}

const app = express();
app.disable("x-powered-by");
app.set("etag", false);

// The article's snippet reads `windowMs: 60  1000` (a `*` lost): one minute
// is meant. The limit is set so high that it never rejects: we measure its
// cost, not its rejections. `limit` is the current name of the article's `max`.
app.use(rateLimit({ windowMs: 60 * 1000, limit: 1_000_000_000 }));

app.get("/customers/:id/summary", async (req, res) => {
  const id = encodeURIComponent(req.params.id);
  const headers = req.headers["accept-language"]
    ? { "accept-language": req.headers["accept-language"] }
    : undefined;
  const missing = [];
  try {
    // Customer, orders and shipping at once; shipping is optional.
    const [customer, orders, shipping] = await Promise.all([
      getJson("customer", `${upstream.customers}/customers/${id}`, headers),
      getJson("orders", `${upstream.orders}/orders?customer_id=${id}`, headers),
      getJson("shipping", `${upstream.shipping}/shipments?customer_id=${id}`, headers).catch(
        (err) => {
          missing.push(missingEntry(err));
          return null;
        },
      ),
    ]);
    // Products depend on the orders: one batched call for the distinct ids.
    const ids = [...new Set(orders.map((o) => o.product_id))];
    const products = ids.length
      ? await getJson("products", `${upstream.products}/products?ids=${ids.join(",")}`, headers)
      : [];
    res.json({ customer, orders, shipping, products, missing });
  } catch (err) {
    if (!(err instanceof CallError)) throw err;
    const status = err.kind === "timeout" ? 504 : err.kind === "status" && err.status < 500 ? err.status : 502;
    res.status(status).type("application/problem+json").send(
      JSON.stringify({ title: "Upstream call failed", status, errors: [missingEntry(err)] }),
    );
  }
});

app.get("/healthz", (_req, res) => res.type("text/plain").send("ok"));

const server = app.listen(port, "127.0.0.1", () => {
  console.log(`express aggregator on 127.0.0.1:${port} (node ${process.version})`);
});
// Clients (the load generator, the 10,000-connection check) keep connections
// open between requests; Node's default 5 s keep-alive would close them.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 125_000;
process.on("SIGTERM", () => server.close(() => process.exit(0)));
