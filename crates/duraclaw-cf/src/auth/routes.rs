//! Which auth route a request is for. Target-independent.

/// The largest request body the auth routes read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// An auth route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/login`.
    Login,
    /// `POST /api/logout`.
    Logout,
    /// `GET /api/me`.
    Me,
    /// `GET /api/admin/users`: the users' names.
    AdminListUsers,
    /// `POST /api/admin/users` with `{"username","password"}`.
    AdminCreateUser,
    /// `PUT /api/admin/users/{name}/password` with `{"password"}`.
    AdminSetPassword(String),
    /// `DELETE /api/admin/users/{name}`.
    AdminDeleteUser(String),
    /// Another path under `/api/admin/`: 404 (after the admin token check).
    AdminUnknown,
    /// A known path with another method: 405 with `Allow`.
    WrongMethod(&'static str),
}

/// The auth route of `method` and `path`; `None` for every other path.
pub fn route(method: &str, path: &str) -> Option<Route> {
    let is = |m: &str| method.eq_ignore_ascii_case(m);
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    match path {
        "/api/login" => Some(if is("POST") {
            Route::Login
        } else {
            Route::WrongMethod("POST")
        }),
        "/api/logout" => Some(if is("POST") {
            Route::Logout
        } else {
            Route::WrongMethod("POST")
        }),
        "/api/me" => Some(if is("GET") || is("HEAD") {
            Route::Me
        } else {
            Route::WrongMethod("GET")
        }),
        "/api/admin/users" => Some(if is("POST") {
            Route::AdminCreateUser
        } else if is("GET") {
            Route::AdminListUsers
        } else {
            Route::WrongMethod("GET, POST")
        }),
        "/api/admin" => Some(Route::AdminUnknown),
        _ => {
            let rest = path.strip_prefix("/api/admin/")?;
            let Some(user) = rest.strip_prefix("users/") else {
                return Some(Route::AdminUnknown);
            };
            Some(match user.split('/').collect::<Vec<_>>().as_slice() {
                [name, "password"] if !name.is_empty() => {
                    if is("PUT") {
                        Route::AdminSetPassword((*name).to_owned())
                    } else {
                        Route::WrongMethod("PUT")
                    }
                }
                [name] if !name.is_empty() => {
                    if is("DELETE") {
                        Route::AdminDeleteUser((*name).to_owned())
                    } else {
                        Route::WrongMethod("DELETE")
                    }
                }
                _ => Route::AdminUnknown,
            })
        }
    }
}

/// Whether the route needs the admin token.
pub fn is_admin(route: &Route) -> bool {
    matches!(
        route,
        Route::AdminListUsers
            | Route::AdminCreateUser
            | Route::AdminSetPassword(_)
            | Route::AdminDeleteUser(_)
            | Route::AdminUnknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        assert_eq!(route("POST", "/api/login"), Some(Route::Login));
        assert_eq!(route("GET", "/api/login"), Some(Route::WrongMethod("POST")));
        assert_eq!(route("POST", "/api/logout"), Some(Route::Logout));
        assert_eq!(route("GET", "/api/me"), Some(Route::Me));
        assert_eq!(route("GET", "/api/me/"), Some(Route::Me));
        assert_eq!(
            route("POST", "/api/admin/users"),
            Some(Route::AdminCreateUser)
        );
        assert_eq!(
            route("GET", "/api/admin/users"),
            Some(Route::AdminListUsers)
        );
        assert_eq!(
            route("PUT", "/api/admin/users/alice/password"),
            Some(Route::AdminSetPassword("alice".into()))
        );
        assert_eq!(
            route("DELETE", "/api/admin/users/alice"),
            Some(Route::AdminDeleteUser("alice".into()))
        );
        assert_eq!(
            route("GET", "/api/admin/users/alice"),
            Some(Route::WrongMethod("DELETE"))
        );
        assert_eq!(route("GET", "/api/admin/other"), Some(Route::AdminUnknown));
        assert_eq!(
            route("GET", "/api/admin/users//x"),
            Some(Route::AdminUnknown)
        );
        assert_eq!(route("GET", "/api/admin"), Some(Route::AdminUnknown));
        assert_eq!(route("GET", "/api/sessions"), None);
        assert_eq!(route("GET", "/"), None);
        assert_eq!(route("GET", "/api/administrator"), None);
        assert!(is_admin(&Route::AdminUnknown));
        assert!(!is_admin(&Route::Login));
    }

    proptest! {
        #[test]
        fn any_path_is_handled(method in "[A-Za-z]{0,8}", path in ".{0,80}") {
            if let Some(Route::AdminSetPassword(name) | Route::AdminDeleteUser(name)) = route(&method, &path) {
                prop_assert!(!name.is_empty() && !name.contains('/'));
            }
        }
    }
}
