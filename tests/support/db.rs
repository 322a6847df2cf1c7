//! Per-test databases, cloned from a template migrated once per migration set.

use sqlx::{Connection, Executor, PgConnection};
use switchyard_shared::db::MIGRATOR;

pub fn admin_url() -> String {
    std::env::var("SWITCHYARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn url_for(db: &str) -> String {
    format!("{}/{db}?sslmode=disable", admin_url())
}

async fn admin_conn() -> PgConnection {
    PgConnection::connect(&url_for("postgres"))
        .await
        .expect("Postgres must listen on 127.0.0.1:5432 (or set SWITCHYARD_TEST_PG)")
}

/// Name of the template for the current migrations (changes when any migration changes).
fn template_name() -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for m in MIGRATOR.iter() {
        for b in m.version.to_le_bytes().iter().chain(m.checksum.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
    }
    format!("switchyard_test_tpl_{h:016x}")
}

async fn ensure_template(conn: &mut PgConnection) -> String {
    let name = template_name();
    // Serialise template creation across test processes.
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    if !exists {
        let building = format!("{name}_building");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {building} WITH (FORCE)"
        )))
        .await
        .unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
            .await
            .unwrap();
        {
            let mut c = PgConnection::connect(&url_for(&building)).await.unwrap();
            MIGRATOR.run(&mut c).await.expect("migrations apply");
            c.close().await.unwrap();
        }
        conn.execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {building} RENAME TO {name}"
        )))
        .await
        .unwrap();
    }
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .unwrap();
    name
}

/// A database of its own, dropped when the test ends (even when it panics).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let mut conn = admin_conn().await;
        let template = ensure_template(&mut conn).await;
        sweep_stale(&mut conn).await;
        let name = format!(
            "switchyard_test_{}_{}",
            chrono::Utc::now().timestamp(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} TEMPLATE {template}"
        )))
        .await
        .unwrap();
        conn.close().await.ok();
        TestDb {
            url: url_for(&name),
            name,
        }
    }
}

/// Drops test databases left behind by killed test runs (older than an hour).
async fn sweep_stale(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname ~ '^switchyard_test_[0-9]+_'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    for n in names {
        let ts: i64 = n
            .split('_')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or(now);
        if now - ts > 3600 {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {n} WITH (FORCE)"
                )))
                .await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async context (or during a panic): use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&url_for("postgres")).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}
