//! Generation of the demo dataset: vocabulary, distributions and the
//! seeded streams that make every run produce the same data.

use super::calendar::{DAY_SECS, date, days_from_civil, timestamp};
use super::data::{
    CUSTOMERS, Customer, ORDERS, Order, OrderStatus, Product, Shipment, ShipmentStatus,
};
use super::rng::SplitMix64;

// One fixed seed per entity kind, so that changing how one kind is generated
// leaves the others as they were.
const CUSTOMER_SEED: u64 = 0x5EED_C057_0000_0001;
const PRODUCT_SEED: u64 = 0x5EED_960D_0000_0002;
const ORDER_SEED: u64 = 0x5EED_0DE5_0000_0003;
const SHIPMENT_SEED: u64 = 0x5EED_5419_0000_0004;

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Chloé", "David", "Elif", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karin",
    "Lars", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sören", "Tara", "Umar", "Vera", "Wim",
    "Yusuf", "Zoë", "Marta", "Luca", "Sofia", "Emil", "Aiko", "Ravi",
];
#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Müller", "Schmidt", "Dubois", "Rossi", "García", "Nowak", "Jansen", "Andersson", "Kovač",
    "Papadopoulos", "Smith", "Novák", "Silva", "Weber", "Fischer", "Martin", "Bianchi", "Larsen",
    "Yılmaz", "Horvat", "Virtanen", "Kowalski", "Berg", "Costa", "Meyer", "Ødegaard", "Brown",
    "Lefèvre", "Tanaka", "Patel",
];
/// Repeats weight the draw towards the shop's home markets.
const COUNTRIES: &[&str] = &[
    "DE", "DE", "DE", "FR", "FR", "NL", "AT", "CH", "IT", "ES", "PL", "SE", "DK", "BE", "GB", "US",
];
const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "example.net", "mail.example"];

/// Customer `id`, from its own seeded stream.
pub fn customer(id: u64) -> Customer {
    let mut rng = SplitMix64::new(CUSTOMER_SEED ^ id);
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let domain = rng.pick(EMAIL_DOMAINS);
    let tier = match rng.below(100) {
        0..50 => "bronze",
        50..80 => "silver",
        80..95 => "gold",
        _ => "platinum",
    };
    // Sign-ups spread evenly over 2018..=2023, so ids grow with the date.
    let first_day = days_from_civil(2018, 1, 1);
    let span = days_from_civil(2024, 1, 1) - first_day;
    let created = first_day + (id as i64 - 1) * span / CUSTOMERS as i64;
    Customer {
        id,
        name: format!("{first} {last}"),
        email: format!("{}.{}{id}@{domain}", ascii_lower(first), ascii_lower(last)),
        country: rng.pick(COUNTRIES),
        tier,
        created_at: date(created),
    }
}

/// The name in lower-case ASCII, transliterating the letters the name lists
/// use, so e-mail addresses stay plain ASCII.
fn ascii_lower(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let ascii = match c {
            'ä' => "ae",
            'ö' | 'ø' => "oe",
            'ü' => "ue",
            'é' | 'è' | 'ë' => "e",
            'í' | 'ı' => "i",
            'č' => "c",
            'á' => "a",
            c if c.is_ascii_alphanumeric() => {
                out.push(c);
                continue;
            }
            _ => continue,
        };
        out.push_str(ascii);
    }
    out
}

/// Category, product nouns, and unit price range in cents.
const CATEGORIES: &[(&str, &[&str], u64, u64)] = &[
    (
        "electronics",
        &[
            "Headphones",
            "Keyboard",
            "Mouse",
            "Monitor",
            "Speaker",
            "Charger",
            "Webcam",
        ],
        1_900,
        89_900,
    ),
    (
        "books",
        &["Cookbook", "Novel", "Atlas", "Field Guide", "Anthology"],
        700,
        4_900,
    ),
    (
        "home",
        &[
            "Lamp", "Chair", "Rug", "Mug", "Vase", "Pillow", "Blanket", "Shelf",
        ],
        900,
        24_900,
    ),
    (
        "garden",
        &["Shovel", "Planter", "Hose", "Rake", "Bench"],
        1_400,
        19_900,
    ),
    (
        "sports",
        &["Yoga Mat", "Water Bottle", "Dumbbell", "Racket", "Backpack"],
        1_200,
        14_900,
    ),
    (
        "toys",
        &["Puzzle", "Board Game", "Kite", "Building Set", "Plush Bear"],
        900,
        7_900,
    ),
    (
        "grocery",
        &[
            "Coffee Beans",
            "Olive Oil",
            "Green Tea",
            "Dark Chocolate",
            "Honey",
        ],
        200,
        2_900,
    ),
];
#[rustfmt::skip]
const ADJECTIVES: &[&str] = &[
    "Classic", "Compact", "Deluxe", "Essential", "Everyday", "Premium", "Nordic", "Urban", "Eco",
    "Pro", "Vintage", "Handmade",
];
const COLOURS: &[&str] = &[
    "Black", "White", "Sage", "Navy", "Sand", "Coral", "Graphite",
];

/// Product `id`, from its own seeded stream.
pub fn product(id: u64) -> Product {
    let mut rng = SplitMix64::new(PRODUCT_SEED ^ id);
    let (category, nouns, lo, hi) = rng.pick(CATEGORIES);
    let name = format!(
        "{} {} {}",
        rng.pick(ADJECTIVES),
        rng.pick(nouns),
        rng.pick(COLOURS)
    );
    // Whole euros minus one cent, like real price tags.
    let price_cents = rng.range(lo / 100, hi / 100) * 100 + 99;
    Product {
        id,
        name,
        category,
        price_cents,
        currency: "EUR",
    }
}

/// Orders in id order. Customers get different shares: about 3% never
/// order and about 5% order four times as often as the rest, so per-customer
/// lists range from empty to several dozen.
pub fn orders(products: &[Product]) -> Vec<Order> {
    let mut rng = SplitMix64::new(ORDER_SEED);
    // Cumulative weights, searched with a random point in `0..total`.
    let mut cumulative = Vec::with_capacity(CUSTOMERS as usize);
    let mut total = 0u64;
    for _ in 1..=CUSTOMERS {
        total += match rng.below(100) {
            0..3 => 0,
            3..8 => 4,
            _ => 1,
        };
        cumulative.push(total);
    }
    let start = days_from_civil(2024, 1, 1) as u64 * DAY_SECS;
    (1..=ORDERS)
        .map(|id| {
            let point = rng.below(total);
            // The first customer whose cumulative weight exceeds the point;
            // customers of weight 0 are never chosen.
            let customer_id = cumulative.partition_point(|&c| c <= point) as u64 + 1;
            let product = &products[rng.below(products.len() as u64) as usize];
            let quantity = match rng.below(100) {
                0..60 => 1,
                60..85 => 2,
                85..93 => 3,
                93..97 => 4,
                _ => 5,
            };
            // The newer the order, the likelier it is still on its way:
            // about 5% processing and 15% shipped, nearly all among the
            // latest orders; 5% of all are cancelled.
            let age = ORDERS - id;
            let status = if rng.below(100) < 5 {
                OrderStatus::Cancelled
            } else if age < rng.below(ORDERS / 10) {
                OrderStatus::Processing
            } else if age < rng.below(ORDERS * 2 / 5) {
                OrderStatus::Shipped
            } else {
                OrderStatus::Delivered
            };
            // One order every 300 s on average, strictly increasing with the
            // id; 100,000 orders end before 2024 does (30.0M of 31.6M s).
            let placed = start + id * 300 + rng.below(300);
            Order {
                id,
                customer_id,
                product_id: product.id,
                quantity,
                total_cents: product.price_cents * u64::from(quantity),
                status,
                placed_at: timestamp(placed),
            }
        })
        .collect()
}

const CARRIERS: &[&str] = &["DHL", "UPS", "DPD", "GLS", "FedEx"];

/// One shipment per shipped or delivered order, in order-id order.
pub fn shipments(orders: &[Order]) -> Vec<Shipment> {
    let mut rng = SplitMix64::new(SHIPMENT_SEED);
    let start = days_from_civil(2024, 1, 1) as u64 * DAY_SECS;
    let shipped = orders.iter().filter_map(|o| {
        let status = match o.status {
            OrderStatus::Shipped => ShipmentStatus::InTransit,
            OrderStatus::Delivered => ShipmentStatus::Delivered,
            OrderStatus::Processing | OrderStatus::Cancelled => return None,
        };
        Some((o, status))
    });
    shipped
        .zip(1..)
        .map(|((order, status), id)| {
            let carrier = rng.pick(CARRIERS);
            // The order's day from its id's time slot rather than parsing
            // `placed_at`: at most a day early, which the 2-day minimum
            // transit time absorbs.
            let placed_day = ((start + order.id * 300) / DAY_SECS) as i64;
            Shipment {
                id,
                order_id: order.id,
                customer_id: order.customer_id,
                carrier,
                status,
                tracking: tracking_number(carrier, &mut rng),
                eta: date(placed_day + rng.range(2, 7) as i64),
            }
        })
        .collect()
}

/// A tracking number shaped like the carrier's real ones.
fn tracking_number(carrier: &str, rng: &mut SplitMix64) -> String {
    let digits = |rng: &mut SplitMix64, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.below(10) as u8))
            .collect()
    };
    match carrier {
        "DHL" => format!("JJD{}", digits(rng, 18)),
        "UPS" => format!("1Z{:06X}{}", rng.below(1 << 24), digits(rng, 10)),
        "DPD" => digits(rng, 14),
        "GLS" => digits(rng, 11),
        _ => digits(rng, 12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_ascii_transliterations() {
        assert_eq!(ascii_lower("Ødegaard"), "oedegaard");
        assert_eq!(ascii_lower("Yılmaz"), "yilmaz");
        assert_eq!(ascii_lower("Chloé"), "chloe");
        assert_eq!(ascii_lower("Papadopoulos"), "papadopoulos");
    }
}
