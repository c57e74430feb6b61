//! Listings: the catalog (the caller's repositories that hold a tag) and a
//! repository's tags, both sorted and paged with `?n=&last=` and a `Link`
//! header to the next page.

use std::collections::HashMap;

use lb_store::StoreExt;
use warp::http::StatusCode;

use super::reply::{err, insert, json_reply, Reply, Result};
use super::Registry;

impl Registry {
    pub(super) async fn tags(
        &self,
        name: &str,
        pid: &str,
        sid: &str,
        q: &HashMap<String, String>,
    ) -> Result<Reply> {
        let prefix = format!("{}tags/", self.keys.images(pid, sid));
        let (kvs, _) = self.store.list(&prefix).await?;
        let all: Vec<String> = kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let (page, next) = paginate(all, q)?;
        let mut reply = json_reply(
            StatusCode::OK,
            &serde_json::json!({"name": name, "tags": page}),
        );
        if let Some((n, last)) = next {
            insert(
                reply.headers_mut(),
                "link",
                &format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
            );
        }
        Ok(reply)
    }

    /// The repositories of the caller's projects that hold at least one tag.
    pub(super) async fn catalog(&self, uid: &str, q: &HashMap<String, String>) -> Result<Reply> {
        let projects = self.keys.project_index_prefix(uid);
        let (projects, _) = self.store.list(&projects).await?;
        let mut names = Vec::new();
        for project in projects {
            let pid = String::from_utf8_lossy(&project.value).into_owned();
            let services = self.keys.service_index_prefix(&pid);
            let (services, _) = self.store.list(&services).await?;
            for service in services {
                let sid = String::from_utf8_lossy(&service.value).into_owned();
                let tags = format!("{}tags/", self.keys.images(&pid, &sid));
                if !self.store.list(&tags).await?.0.is_empty() {
                    names.push(lb_store::registry::repository(&pid, &sid));
                }
            }
        }
        names.sort();
        let (page, next) = paginate(names, q)?;
        let mut reply = json_reply(StatusCode::OK, &serde_json::json!({"repositories": page}));
        if let Some((n, last)) = next {
            insert(
                reply.headers_mut(),
                "link",
                &format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\""),
            );
        }
        Ok(reply)
    }
}

/// A page of names, and the next page's `n` and `last` if there is one.
type Page = (Vec<String>, Option<(usize, String)>);

/// `?n=&last=` over sorted names: the page, and the next page's query.
fn paginate(all: Vec<String>, q: &HashMap<String, String>) -> Result<Page> {
    let n = match q.get("n") {
        Some(n) => n.parse::<usize>().map_err(|_| {
            err(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n={n:?} is not a number"),
            )
        })?,
        None => usize::MAX,
    };
    let mut rest: Vec<String> = match q.get("last") {
        Some(last) => all.into_iter().filter(|t| t > last).collect(),
        None => all,
    };
    if rest.len() > n {
        rest.truncate(n);
        let last = rest.last().cloned().unwrap_or_default();
        return Ok((rest, Some((n, last))));
    }
    Ok((rest, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_last() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (page, next) = paginate(all.clone(), &q(&[("n", "2")])).unwrap();
        assert_eq!(
            (page, next),
            (vec!["a".into(), "b".into()], Some((2, "b".into())))
        );
        let (page, next) = paginate(all.clone(), &q(&[("n", "2"), ("last", "b")])).unwrap();
        assert_eq!((page, next), (vec!["c".into(), "d".into()], None));
        assert!(paginate(all, &q(&[("n", "x")])).is_err());
    }
}
