//! The git backend on real repositories made by the test: branches, tags, commits,
//! refresh on change, and a remote (file://) clone.

use std::net::SocketAddr;
use std::time::Duration;

use git2::{Oid, Repository, Signature};
use msa_config::server::{ConfigServer, Environment, GitOptions, GitRepository};

/// Commits `files` (flat names) on `refname`, on top of `parent`.
fn commit(repo: &Repository, refname: &str, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
    let mut tree = repo.treebuilder(None).unwrap();
    for (name, text) in files {
        let blob = repo.blob(text.as_bytes()).unwrap();
        tree.insert(name, blob, 0o100644).unwrap();
    }
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let signature = Signature::now("msa tests", "tests@msa.invalid").unwrap();
    let parents: Vec<_> = parent
        .map(|p| repo.find_commit(p).unwrap())
        .into_iter()
        .collect();
    let parents: Vec<_> = parents.iter().collect();
    repo.commit(
        Some(refname),
        &signature,
        &signature,
        "config",
        &tree,
        &parents,
    )
    .unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    first: Oid,
    main: Oid,
}

/// main: price 1 (tagged v1), then price 3; release/2.0: price 2.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config-repo");
    let repo = Repository::init_bare(&path).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let shared = ("application.yml", "currency: EUR\n");
    let first = commit(
        &repo,
        "refs/heads/main",
        None,
        &[shared, ("orders.yml", "price: 1\n")],
    );
    let signature = Signature::now("msa tests", "tests@msa.invalid").unwrap();
    repo.tag(
        "v1",
        &repo.find_object(first, None).unwrap(),
        &signature,
        "v1",
        false,
    )
    .unwrap();
    commit(
        &repo,
        "refs/heads/release/2.0",
        Some(first),
        &[shared, ("orders.yml", "price: 2\n")],
    );
    let main = commit(
        &repo,
        "refs/heads/main",
        Some(first),
        &[shared, ("orders.yml", "price: 3\n")],
    );
    Fixture {
        _dir: dir,
        path,
        first,
        main,
    }
}

async fn serve(server: ConfigServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

async fn price(addr: SocketAddr, path: &str) -> (serde_json::Value, Environment) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let env: Environment = response.json().await.unwrap();
    (env.property_sources[0].source["price"].clone(), env)
}

#[tokio::test]
async fn labels_are_branches_tags_and_commits() {
    let f = fixture();
    let repo = GitRepository::open(f.path.to_str().unwrap(), None).unwrap();
    let addr = serve(ConfigServer::new(repo)).await;

    let (p, env) = price(addr, "/orders/default").await;
    assert_eq!(p, 3, "the default label is main");
    assert_eq!(env.version.as_deref(), Some(f.main.to_string().as_str()));
    assert!(
        env.property_sources[0]
            .name
            .ends_with("config-repo/orders.yml")
    );
    assert_eq!(env.property_sources[1].source["currency"], "EUR");
    assert_eq!(price(addr, "/orders/default/main").await.0, 3);
    assert_eq!(price(addr, "/orders/default/v1").await.0, 1);
    assert_eq!(price(addr, "/orders/default/release(_)2.0").await.0, 2);
    assert_eq!(
        price(addr, &format!("/orders/default/{}", f.first)).await.0,
        1
    );

    let flat = reqwest::get(format!("http://{addr}/v1/orders-default.yml"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flat.contains("price: 1"), "{flat}");

    let missing = reqwest::get(format!("http://{addr}/orders/default/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
}

#[tokio::test]
async fn master_is_the_fallback_and_a_default_label_can_be_set() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    repo.set_head("refs/heads/master").unwrap();
    commit(
        &repo,
        "refs/heads/master",
        None,
        &[("orders.yml", "price: 10\n")],
    );
    commit(
        &repo,
        "refs/heads/staging",
        None,
        &[("orders.yml", "price: 20\n")],
    );
    let path = dir.path().to_str().unwrap();
    let addr = serve(ConfigServer::new(GitRepository::open(path, None).unwrap())).await;
    assert_eq!(price(addr, "/orders/default").await.0, 10);
    let staged = GitRepository::open(path, Some("staging".into())).unwrap();
    let addr = serve(ConfigServer::new(staged)).await;
    assert_eq!(price(addr, "/orders/default").await.0, 20);
}

#[tokio::test]
async fn a_new_commit_reaches_watchers_without_a_fetch_per_request() {
    let f = fixture();
    let addr = serve(ConfigServer::new(
        GitRepository::open(f.path.to_str().unwrap(), None).unwrap(),
    ))
    .await;
    let first = reqwest::get(format!("http://{addr}/orders/default"))
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let watch = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!("http://{addr}/_msa/watch/orders/default?wait=20s"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap()
    });
    let repo = Repository::open_bare(&f.path).unwrap();
    commit(
        &repo,
        "refs/heads/main",
        Some(f.main),
        &[
            ("application.yml", "currency: EUR\n"),
            ("orders.yml", "price: 4\n"),
        ],
    );
    let response = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let env: Environment = response.json().await.unwrap();
    assert_eq!(env.property_sources[0].source["price"], 4);
}

#[tokio::test]
async fn a_url_is_cloned_once_and_served_from_the_mirror() {
    let f = fixture();
    let url = format!("file://{}", f.path.display());
    let repo = GitRepository::open(&url, None).unwrap();
    assert_eq!(repo.location(), url);
    let addr = serve(ConfigServer::new(repo)).await;
    assert_eq!(price(addr, "/orders/default").await.0, 3);
    assert_eq!(price(addr, "/orders/default/v1").await.0, 1);
    assert_eq!(price(addr, "/orders/default/release(_)2.0").await.0, 2);
}

#[test]
fn an_unreadable_repository_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let error = GitRepository::open("/nonexistent/config-repo.git", None).unwrap_err();
    assert!(
        error.to_string().contains("cannot read the repository"),
        "{error}"
    );
}

#[tokio::test]
async fn revision_expressions_are_not_labels() {
    let f = fixture();
    let addr = serve(ConfigServer::new(
        GitRepository::open(f.path.to_str().unwrap(), None).unwrap(),
    ))
    .await;
    // Each names a commit to `git rev-parse`, and each would be one more commit to parse
    // and cache: only branches, tags and commit ids are labels.
    for expression in [
        "main~1",
        "main%5E",
        "v1%5E%7Bcommit%7D",
        "main@%7B0%7D",
        ":(_)price",
        "main..v1",
        "HEAD",
    ] {
        let url = format!("http://{addr}/orders/default/{expression}");
        let status = reqwest::get(&url).await.unwrap().status();
        assert_eq!(status, 404, "{expression}");
    }
    let short = &f.first.to_string()[..7];
    assert_eq!(price(addr, &format!("/orders/default/{short}")).await.0, 1);
}

/// A peer that accepts connections and never answers: a remote that hangs.
async fn stalled_remote() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_hanging_remote_stalls_neither_requests_nor_health() {
    let f = fixture();
    let url = format!("file://{}", f.path.display());
    let options = GitOptions {
        refresh: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
        ..GitOptions::default()
    };
    let repo = GitRepository::open_with(&url, options).unwrap();
    // From now on the mirror fetches from a remote that never answers.
    let stalled = stalled_remote().await;
    Repository::open_bare(repo.mirror().unwrap())
        .unwrap()
        .remote_set_url("origin", &format!("http://{stalled}/config-repo.git"))
        .unwrap();
    let addr = serve(ConfigServer::new(repo)).await;
    let started = tokio::time::Instant::now();
    let mut failing = None;
    while started.elapsed() < Duration::from_secs(3) || failing.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "health never said why"
        );
        // Served from the mirror while fetches hang, each well within the fetch timeout.
        let served = tokio::time::timeout(Duration::from_secs(1), price(addr, "/orders/default"));
        assert_eq!(served.await.expect("a request waited for the fetch").0, 3);
        let health = tokio::time::timeout(
            Duration::from_secs(1),
            reqwest::get(format!("http://{addr}/actuator/health")),
        );
        let health = health.await.expect("health waited for the fetch").unwrap();
        assert_eq!(health.status(), 200);
        let health: serde_json::Value = health.json().await.unwrap();
        failing = health["components"]["repository"]["details"]["refreshFailing"]
            .as_str()
            .map(str::to_owned);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failing.unwrap().contains("did not finish in 1s"));
}

#[test]
fn a_first_fetch_that_hangs_fails_the_start_in_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stalled = rt.block_on(stalled_remote());
    let _guard = rt.enter();
    let options = GitOptions {
        timeout: Duration::from_secs(1),
        ..GitOptions::default()
    };
    let url = format!("http://{stalled}/never-{}.git", std::process::id());
    let error = GitRepository::open_with(&url, options).unwrap_err();
    assert!(
        error.to_string().contains("did not finish in 1s"),
        "{error}"
    );
}
