//! A MariaDB database of a test's own (playing an ERP or a MES), dropped when it ends.

use sqlx::{Connection, Executor};

/// A MariaDB database and a user with a password of their own, dropped at the end.
pub struct MariaDb {
    url: String,
    /// The database's name, also its user's (password `right-password`).
    pub name: String,
}

impl MariaDb {
    pub async fn create() -> MariaDb {
        let name = format!("sy_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut root = sqlx::MySqlConnection::connect("mysql://root@127.0.0.1:3306/")
            .await
            .unwrap();
        root.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        root.execute(sqlx::AssertSqlSafe(format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY 'right-password'"
        )))
        .await
        .unwrap();
        root.execute(sqlx::AssertSqlSafe(format!(
            "GRANT ALL ON {name}.* TO '{name}'@'%'"
        )))
        .await
        .unwrap();
        MariaDb {
            url: "mysql://root@127.0.0.1:3306/".into(),
            name,
        }
    }
}

impl MariaDb {
    /// A connection to the database as its user.
    pub async fn connect(&self) -> sqlx::MySqlConnection {
        sqlx::MySqlConnection::connect(&self.user_url())
            .await
            .unwrap()
    }

    /// The URL an integration reaches the database with.
    pub fn user_url(&self) -> String {
        let n = &self.name;
        format!("mysql://{n}:right-password@127.0.0.1:3306/{n}?ssl-mode=disabled")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut root) = sqlx::MySqlConnection::connect(&url).await {
                    let _ = root
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name}"
                        )))
                        .await;
                    let _ = root
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP USER IF EXISTS '{name}'@'%'"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}
