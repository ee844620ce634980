//! Demo upstream services for `switchyard demo`, the end-to-end tests and
//! the benchmarks: four real HTTP/1.1 servers on loopback (customers, orders,
//! shipping, products) serving a deterministic generated dataset, each
//! answering after a configurable latency.
//!
//! Endpoints (all `GET`/`HEAD`; other methods get 405, unknown paths 404,
//! errors are `application/problem+json`):
//!
//! | service   | path                                   | answer                              |
//! |-----------|----------------------------------------|-------------------------------------|
//! | all       | `/healthz`                             | `ok` (text/plain)                   |
//! | customers | `/customers/{id}`                      | one [`Customer`] or 404             |
//! | customers | `/customers?ids=1,2,3`                 | array in first-seen order, unknown ids omitted |
//! | orders    | `/orders/{id}`                         | one [`Order`] or 404                |
//! | orders    | `/orders?customer_id=N`                | the customer's orders in id order   |
//! | shipping  | `/shipments/{id}`                      | one [`Shipment`] or 404             |
//! | shipping  | `/shipments?customer_id=N`             | the customer's shipments in id order |
//! | products  | `/products/{id}`                       | one [`Product`] or 404              |
//! | products  | `/products?ids=3,1,2`                  | array in first-seen order, unknown ids omitted |
//! | products  | `/products`, `/products?page=N`        | catalogue page of [`PAGE_SIZE`] products, page 1 first |
//!
//! A missing or malformed `customer_id`, a malformed id in `ids`, or a
//! `page` below 1 is a 400.

mod calendar;
mod data;
mod generate;
mod rng;
mod routes;
mod server;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use data::{
    CUSTOMERS, Customer, Dataset, ORDERS, Order, OrderStatus, PRODUCTS, Product, Shipment,
    ShipmentStatus, dataset,
};
pub use routes::PAGE_SIZE;

/// One of the four demo services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `/customers`, on `base_port`.
    Customers,
    /// `/orders`, on `base_port + 1`.
    Orders,
    /// `/shipments`, on `base_port + 2`.
    Shipping,
    /// `/products`, on `base_port + 3`.
    Products,
}

impl Service {
    /// All services, in port order.
    pub const ALL: [Service; 4] = [
        Service::Customers,
        Service::Orders,
        Service::Shipping,
        Service::Products,
    ];

    /// Lower-case name: `customers`, `orders`, `shipping` or `products`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Customers => "customers",
            Service::Orders => "orders",
            Service::Shipping => "shipping",
            Service::Products => "products",
        }
    }

    /// Offset of this service's port from [`DemoOptions::base_port`].
    pub fn port_offset(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    /// Parses a [`Service::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == s)
            .ok_or_else(|| format!("unknown demo service {s:?}"))
    }
}

/// How to run the demo services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Pause before every answer, unless overridden per service.
    pub latency: Duration,
    /// Each pause is uniform in `latency ± jitter`; zero means exactly
    /// `latency`.
    pub jitter: Duration,
    /// Address to bind; must be a loopback address.
    pub host: IpAddr,
    /// 0 puts each service on an ephemeral port; otherwise customers get
    /// `base_port`, orders `+1`, shipping `+2`, products `+3`.
    pub base_port: u16,
    /// Per-service replacements for `latency`; `jitter` still applies.
    pub latency_overrides: Vec<(Service, Duration)>,
}

impl Default for DemoOptions {
    /// 20 ms latency, no jitter, 127.0.0.1, ports 9101..=9104.
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            jitter: Duration::ZERO,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 9101,
            latency_overrides: Vec::new(),
        }
    }
}

impl DemoOptions {
    /// The latency `service` answers with: its last override, else `latency`.
    pub fn latency_of(&self, service: Service) -> Duration {
        self.latency_overrides
            .iter()
            .rev()
            .find(|(s, _)| *s == service)
            .map_or(self.latency, |&(_, latency)| latency)
    }
}

/// The running demo services. Dropping this stops them (in the background);
/// [`DemoServices::shutdown`] also waits until they have stopped.
#[derive(Debug)]
pub struct DemoServices {
    /// Address of the customers service.
    pub customers: SocketAddr,
    /// Address of the orders service.
    pub orders: SocketAddr,
    /// Address of the shipping service.
    pub shipping: SocketAddr,
    /// Address of the products service.
    pub products: SocketAddr,
    /// Dropping it tells every server to stop.
    stop: watch::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoServices {
    /// Address of one service.
    pub fn addr(&self, service: Service) -> SocketAddr {
        match service {
            Service::Customers => self.customers,
            Service::Orders => self.orders,
            Service::Shipping => self.shipping,
            Service::Products => self.products,
        }
    }

    /// Stops accepting connections and waits until in-flight requests are
    /// answered (at most a few seconds) and every server has stopped.
    pub async fn shutdown(self) {
        let DemoServices { stop, tasks, .. } = self;
        drop(stop);
        for task in tasks {
            // A server task only fails by panicking, which tracing has seen.
            let _ = task.await;
        }
    }
}

/// Generates the dataset (if not yet done), binds all four services, and
/// serves them on the current tokio runtime until the result is dropped.
pub async fn start(opts: DemoOptions) -> io::Result<DemoServices> {
    if !opts.host.is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("demo services bind loopback only, not {}", opts.host),
        ));
    }
    // Off the async threads, and before binding, so the first request is not
    // slowed by generation.
    tokio::task::spawn_blocking(dataset)
        .await
        .map_err(io::Error::other)?;
    // Bind all four before serving any, so a failure leaves nothing running.
    let mut listeners = Vec::with_capacity(Service::ALL.len());
    for service in Service::ALL {
        let port = match opts.base_port {
            0 => 0,
            base => base.checked_add(service.port_offset()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("demo base port {base} leaves no room for the {service} service"),
                )
            })?,
        };
        let listener = TcpListener::bind((opts.host, port)).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "demo {service} service: cannot bind {}:{port}: {e}",
                    opts.host
                ),
            )
        })?;
        listeners.push((service, listener.local_addr()?, listener));
    }
    let (stop, stopped) = watch::channel(());
    let mut addrs = [SocketAddr::from((opts.host, 0)); 4];
    let mut tasks = Vec::with_capacity(listeners.len());
    for (service, addr, listener) in listeners {
        tracing::debug!(%service, %addr, "demo service listening");
        addrs[service.port_offset() as usize] = addr;
        let latency = opts.latency_of(service);
        tasks.push(server::spawn(
            service,
            listener,
            latency,
            opts.jitter,
            stopped.clone(),
        ));
    }
    let [customers, orders, shipping, products] = addrs;
    Ok(DemoServices {
        customers,
        orders,
        shipping,
        products,
        stop,
        tasks,
    })
}

#[cfg(test)]
mod tests;
