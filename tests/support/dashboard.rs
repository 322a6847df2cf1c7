//! A signed-in dashboard client over plain HTTP (no browser): sign in, read pages, send forms
//! with the page's CSRF token. Cookies are handled by hand: the session cookie only.

use reqwest::{Response, StatusCode, redirect::Policy};

pub struct Dashboard {
    pub base: String,
    pub http: reqwest::Client,
    /// `sy_dashboard=<token>`, once signed in.
    pub cookie: String,
}

impl Dashboard {
    /// Signs in to the dashboard at `base` (the app's base URL) with `email` (None: the admin
    /// token in `secret`).
    pub async fn sign_in(base: &str, email: Option<&str>, secret: &str) -> Dashboard {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let r = http
            .post(format!("{base}/dashboard/login"))
            .form(&[
                ("email", email.unwrap_or("")),
                ("secret", secret),
                ("next", "/dashboard"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r
            .headers()
            .get("set-cookie")
            .expect("signed in")
            .to_str()
            .unwrap();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        Dashboard {
            base: base.to_owned(),
            http,
            cookie,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// A page's status and HTML.
    pub async fn page(&self, path: &str) -> (u16, String) {
        let r = self.get(path).await;
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The CSRF token of this session (read off the overview page).
    pub async fn csrf(&self) -> String {
        let (_, html) = self.page("/dashboard/workers").await;
        let start = html
            .find("name=\"csrf\" content=\"")
            .expect("a signed-in page")
            + 21;
        html[start..].split('"').next().unwrap().to_owned()
    }

    /// POSTs a form (add the `csrf` field yourself) from this site.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap()
    }
}
