//! The balancer around tonic channels: gRPC calls (the standard health service) spread over
//! two real tonic servers, and a server taken out of service stops getting calls.

use std::net::SocketAddr;

use msa_core::{InstanceStatus, ServiceInstance};
use msa_discovery::balance::{Balancer, BalancerConfig, EndpointBalancer, Strategy};
use msa_discovery::discovery::{Discovery, Instances};
use tokio::sync::watch;
use tonic::transport::Endpoint;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A gRPC server whose health service reports `who` as SERVING (and nothing else).
async fn server(who: &str) -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(who, ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    addr
}

#[derive(Debug, Clone)]
struct Fixed(watch::Sender<Instances>);

impl Discovery for Fixed {
    fn watch(&self, _: &str) -> watch::Receiver<Instances> {
        self.0.subscribe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_balanced_over_tonic_channels() {
    let one = server("one").await;
    let two = server("two").await;
    let instance = |id: &str, addr: SocketAddr| {
        ServiceInstance::new("health", addr.ip().to_string(), addr.port()).with_id(id)
    };
    let discovery = Fixed(watch::Sender::new(
        vec![instance("one", one), instance("two", two)].into(),
    ));
    let balancer = Balancer::new(
        discovery.clone(),
        BalancerConfig::default().with_strategy(Strategy::RoundRobin),
    );
    let channel = EndpointBalancer::new(balancer, "health", |instance: &ServiceInstance| {
        Endpoint::from_shared(instance.uri().to_string())
            .unwrap()
            .connect_lazy()
    });
    let mut client = HealthClient::new(channel);

    // Each server answers SERVING only for its own name (NOT_FOUND for the other's):
    // asking for "one" tells whether the call reached server one.
    let mut reached = async |who: &str, calls: usize| {
        let mut hits = 0;
        for _ in 0..calls {
            let request = HealthCheckRequest {
                service: who.to_owned(),
            };
            if let Ok(answer) = client.check(request).await
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                hits += 1;
            }
        }
        hits
    };
    assert_eq!(reached("one", 20).await, 10);
    assert_eq!(reached("two", 20).await, 10);

    discovery.0.send_replace(
        vec![
            instance("one", one).with_status(InstanceStatus::OutOfService),
            instance("two", two),
        ]
        .into(),
    );
    assert_eq!(reached("one", 20).await, 0);
    assert_eq!(reached("two", 20).await, 20);
}
