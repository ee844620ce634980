//! The demo dataset: customers, their orders and shipments, and products,
//! generated deterministically once and indexed for O(1) lookups.

use std::sync::OnceLock;

use serde::Serialize;

use super::generate;

/// Number of customers; their ids are `1..=CUSTOMERS`.
pub const CUSTOMERS: u64 = 10_000;
/// Number of orders; their ids are `1..=ORDERS`.
pub const ORDERS: u64 = 100_000;
/// Number of products; their ids are `1..=PRODUCTS`.
pub const PRODUCTS: u64 = 1_000;

/// A customer of the demo shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Customer {
    /// Id in `1..=CUSTOMERS`.
    pub id: u64,
    /// Full name; some contain non-ASCII letters.
    pub name: String,
    /// Unique, ASCII e-mail address.
    pub email: String,
    /// ISO 3166-1 alpha-2 country code.
    pub country: &'static str,
    /// Loyalty tier: `bronze`, `silver`, `gold` or `platinum`.
    pub tier: &'static str,
    /// Sign-up date, `YYYY-MM-DD`; grows with the id.
    pub created_at: String,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Paid, not yet handed to a carrier; has no shipment.
    Processing,
    /// With a carrier; has an `in_transit` shipment.
    Shipped,
    /// Arrived; has a `delivered` shipment.
    Delivered,
    /// Cancelled before shipping; has no shipment.
    Cancelled,
}

/// One order line: a quantity of one product bought by one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Id in `1..=ORDERS`; grows with `placed_at`.
    pub id: u64,
    /// The buyer, an existing customer id.
    pub customer_id: u64,
    /// An existing product id.
    pub product_id: u64,
    /// Units bought, `1..=5`.
    pub quantity: u32,
    /// `quantity` times the product's `price_cents`.
    pub total_cents: u64,
    /// Life-cycle state.
    pub status: OrderStatus,
    /// When it was placed, `YYYY-MM-DDTHH:MM:SSZ`, always in 2024.
    pub placed_at: String,
}

/// Where a shipment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// On its way (its order is `shipped`).
    InTransit,
    /// Arrived (its order is `delivered`).
    Delivered,
}

/// The parcel of one shipped or delivered order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shipment {
    /// Id, counting from 1 in order-id order.
    pub id: u64,
    /// The order shipped.
    pub order_id: u64,
    /// The order's customer, repeated so shipments can be listed by customer.
    pub customer_id: u64,
    /// Carrier name, e.g. `DHL` or `UPS`.
    pub carrier: &'static str,
    /// Derived from the order's status.
    pub status: ShipmentStatus,
    /// Carrier-style tracking number.
    pub tracking: String,
    /// Expected (or actual) delivery date, `YYYY-MM-DD`.
    pub eta: String,
}

/// An item of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Id in `1..=PRODUCTS`.
    pub id: u64,
    /// Display name, not necessarily unique.
    pub name: String,
    /// Lower-case category, e.g. `electronics`.
    pub category: &'static str,
    /// Unit price in cents of `currency`.
    pub price_cents: u64,
    /// Always `EUR`.
    pub currency: &'static str,
}

/// The whole generated dataset; get the shared one with [`dataset`].
#[derive(Debug, PartialEq, Eq)]
pub struct Dataset {
    customers: Vec<Customer>,
    products: Vec<Product>,
    orders: Grouped<Order>,
    shipments: Grouped<Shipment>,
}

/// The dataset, generated on first use and shared for the process lifetime.
pub fn dataset() -> &'static Dataset {
    static DATASET: OnceLock<Dataset> = OnceLock::new();
    DATASET.get_or_init(Dataset::generate)
}

impl Dataset {
    /// Generates a fresh copy; always equal to [`dataset`]. Prefer that one,
    /// this is for tests and timing.
    pub fn generate() -> Self {
        let customers = (1..=CUSTOMERS).map(generate::customer).collect();
        let products: Vec<Product> = (1..=PRODUCTS).map(generate::product).collect();
        let orders = generate::orders(&products);
        let shipments = generate::shipments(&orders);
        Self {
            customers,
            products,
            orders: Grouped::new(orders),
            shipments: Grouped::new(shipments),
        }
    }

    /// All customers, in id order.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// The customer with this id, if any.
    pub fn customer(&self, id: u64) -> Option<&Customer> {
        self.customers.get(index(id)?)
    }

    /// All products, in id order.
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// The product with this id, if any.
    pub fn product(&self, id: u64) -> Option<&Product> {
        self.products.get(index(id)?)
    }

    /// All orders, grouped by customer id, then in id order.
    pub fn orders(&self) -> &[Order] {
        &self.orders.items
    }

    /// The order with this id, if any.
    pub fn order(&self, id: u64) -> Option<&Order> {
        self.orders.by_id(id)
    }

    /// The orders of a customer in id order; empty for unknown customers.
    pub fn orders_of(&self, customer_id: u64) -> &[Order] {
        self.orders.of(customer_id)
    }

    /// All shipments, grouped by customer id, then in id order.
    pub fn shipments(&self) -> &[Shipment] {
        &self.shipments.items
    }

    /// The shipment with this id, if any.
    pub fn shipment(&self, id: u64) -> Option<&Shipment> {
        self.shipments.by_id(id)
    }

    /// The shipments of a customer in id order; empty for unknown customers.
    pub fn shipments_of(&self, customer_id: u64) -> &[Shipment] {
        self.shipments.of(customer_id)
    }
}

/// Position of a 1-based id in a dense vector.
fn index(id: u64) -> Option<usize> {
    usize::try_from(id.checked_sub(1)?).ok()
}

/// Items with dense ids `1..=n`, stored grouped by customer so that one
/// customer's items are a contiguous slice.
#[derive(Debug, PartialEq, Eq)]
struct Grouped<T> {
    /// Sorted by customer id, then item id.
    items: Vec<T>,
    /// `items[starts[c - 1]..starts[c]]` belong to customer `c`.
    starts: Vec<usize>,
    /// `items[positions[id - 1]]` has that id.
    positions: Vec<usize>,
}

/// What [`Grouped`] needs to know of an item.
trait Owned {
    fn id(&self) -> u64;
    fn customer_id(&self) -> u64;
}

impl Owned for Order {
    fn id(&self) -> u64 {
        self.id
    }
    fn customer_id(&self) -> u64 {
        self.customer_id
    }
}

impl Owned for Shipment {
    fn id(&self) -> u64 {
        self.id
    }
    fn customer_id(&self) -> u64 {
        self.customer_id
    }
}

impl<T: Owned> Grouped<T> {
    /// `items` must be in id order with ids `1..=items.len()`, and every
    /// customer id must be in `1..=CUSTOMERS`, as the generators ensure.
    fn new(mut items: Vec<T>) -> Self {
        // Stable, so each customer's items stay in id order.
        items.sort_by_key(T::customer_id);
        let mut positions = vec![0; items.len()];
        let mut starts = vec![0; CUSTOMERS as usize + 1];
        for (pos, item) in items.iter().enumerate() {
            positions[item.id() as usize - 1] = pos;
            starts[item.customer_id() as usize] += 1;
        }
        for c in 1..starts.len() {
            starts[c] += starts[c - 1];
        }
        Self {
            items,
            starts,
            positions,
        }
    }

    fn by_id(&self, id: u64) -> Option<&T> {
        self.items.get(*self.positions.get(index(id)?)?)
    }

    fn of(&self, customer_id: u64) -> &[T] {
        let Some(c) = index(customer_id) else {
            return &[];
        };
        match (self.starts.get(c), self.starts.get(c + 1)) {
            (Some(&start), Some(&end)) => &self.items[start..end],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(&Dataset::generate(), dataset());
    }

    #[test]
    fn generation_time() {
        // Not an assertion on speed (CI machines vary); run with
        // `--nocapture` to see it.
        let t = std::time::Instant::now();
        let data = Dataset::generate();
        eprintln!(
            "demo dataset: {} customers, {} orders, {} shipments, {} products in {:?}",
            data.customers().len(),
            data.orders().len(),
            data.shipments().len(),
            data.products().len(),
            t.elapsed()
        );
    }

    fn json<T: Serialize>(value: Option<&T>) -> Option<String> {
        value.map(|v| serde_json::to_string(v).expect("serialisable"))
    }

    #[test]
    fn pinned_values_do_not_drift() {
        // If this fails, the data served to tests and benchmarks changed.
        let data = dataset();
        assert_eq!(
            json(data.customer(42)).as_deref(),
            Some(
                r#"{"id":42,"name":"Umar Papadopoulos","email":"umar.papadopoulos42@mail.example","country":"DE","tier":"silver","created_at":"2018-01-09"}"#
            )
        );
        assert_eq!(
            json(data.order(1)).as_deref(),
            Some(
                r#"{"id":1,"customer_id":7496,"product_id":290,"quantity":2,"total_cents":37598,"status":"delivered","placed_at":"2024-01-01T00:07:08Z"}"#
            )
        );
        assert_eq!(
            json(data.product(1)).as_deref(),
            Some(
                r#"{"id":1,"name":"Urban Shelf Coral","category":"home","price_cents":14999,"currency":"EUR"}"#
            )
        );
    }

    #[test]
    fn counts_and_ids() {
        let data = dataset();
        assert_eq!(data.customers().len() as u64, CUSTOMERS);
        assert_eq!(data.orders().len() as u64, ORDERS);
        assert_eq!(data.products().len() as u64, PRODUCTS);
        for id in 1..=CUSTOMERS {
            assert_eq!(data.customer(id).map(|c| c.id), Some(id));
        }
        for id in 1..=ORDERS {
            assert_eq!(data.order(id).map(|o| o.id), Some(id));
        }
        for id in 1..=PRODUCTS {
            assert_eq!(data.product(id).map(|p| p.id), Some(id));
        }
        for id in 1..=data.shipments().len() as u64 {
            assert_eq!(data.shipment(id).map(|s| s.id), Some(id));
        }
        assert!(data.customer(0).is_none() && data.customer(CUSTOMERS + 1).is_none());
        assert!(data.order(0).is_none() && data.order(ORDERS + 1).is_none());
        assert!(data.product(0).is_none() && data.product(PRODUCTS + 1).is_none());
        assert!(data.orders_of(0).is_empty() && data.orders_of(CUSTOMERS + 1).is_empty());
        assert!(data.shipments_of(u64::MAX).is_empty());
    }

    #[test]
    fn relations_hold() {
        let data = dataset();
        let mut total = 0;
        let mut without_orders = 0;
        for c in data.customers() {
            let orders = data.orders_of(c.id);
            total += orders.len();
            without_orders += usize::from(orders.is_empty());
            assert!(orders.windows(2).all(|w| w[0].id < w[1].id));
            for o in orders {
                assert_eq!(o.customer_id, c.id);
                let p = data.product(o.product_id).expect("order's product exists");
                assert_eq!(o.total_cents, p.price_cents * u64::from(o.quantity));
                assert!(o.placed_at.starts_with("2024-"), "{}", o.placed_at);
            }
            let shipments = data.shipments_of(c.id);
            assert!(shipments.windows(2).all(|w| w[0].id < w[1].id));
            let shipped: Vec<u64> = orders
                .iter()
                .filter(|o| matches!(o.status, OrderStatus::Shipped | OrderStatus::Delivered))
                .map(|o| o.id)
                .collect();
            let shipment_orders: Vec<u64> = shipments.iter().map(|s| s.order_id).collect();
            assert_eq!(shipped, shipment_orders);
        }
        assert_eq!(total as u64, ORDERS);
        assert!(without_orders > 0, "some customers have no orders");
        let emails: HashSet<&str> = data.customers().iter().map(|c| c.email.as_str()).collect();
        assert_eq!(emails.len() as u64, CUSTOMERS);
        assert!(emails.iter().all(|e| e.is_ascii()));
    }
}
