use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A registration as the Java client sends it.
fn java_client_body() -> serde_json::Value {
    json!({"instance": {
        "instanceId": "host:orders:8081", "hostName": "host", "app": "ORDERS", "ipAddr": "127.0.0.1",
        "status": "UP", "overriddenstatus": "UNKNOWN",
        "port": {"$": 8081, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": DEFAULT_DATA_CENTER_CLASS, "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 10, "durationInSecs": 30, "registrationTimestamp": 0,
                      "lastRenewalTimestamp": 0, "evictionTimestamp": 0, "serviceUpTimestamp": 0},
        "metadata": {"zone": "eu-1a", "weight": 3, "management.port": "8081"},
        "homePageUrl": "http://host:8081/", "statusPageUrl": "http://host:8081/actuator/info",
        "healthCheckUrl": "http://host:8081/actuator/health", "vipAddress": "orders",
        "secureVipAddress": "orders", "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1700000000000", "lastDirtyTimestamp": 1700000000001_u64
    }})
}

#[test]
fn reads_what_the_java_client_sends_and_writes_eurekas_shapes() {
    let envelope: InstanceEnvelope = serde_json::from_value(java_client_body()).unwrap();
    let i = &envelope.instance;
    assert_eq!(
        i.port,
        Port {
            port: 8081,
            enabled: FlexBool(true)
        }
    );
    assert_eq!(i.lease_info.as_ref().unwrap().duration_in_secs, FlexU64(30));
    assert_eq!(i.last_dirty_timestamp, FlexU64(1_700_000_000_001));
    assert_eq!(i.metadata["weight"], "3");
    i.validate_for("orders").unwrap();

    let written = serde_json::to_value(&envelope).unwrap();
    let w = &written["instance"];
    assert_eq!(w["port"], json!({"$": 8081, "@enabled": "true"}));
    assert_eq!(w["overriddenStatus"], "UNKNOWN");
    assert_eq!(w["lastDirtyTimestamp"], "1700000000001");
    assert_eq!(w["isCoordinatingDiscoveryServer"], "false");

    let instance = i.to_service_instance();
    assert_eq!(instance.id, "host:orders:8081");
    assert_eq!(instance.service, "orders");
    assert_eq!(instance.zone.as_deref(), Some("eu-1a"));
    assert_eq!(instance.weight, 3);
    assert_eq!(instance.uri().to_string(), "http://host:8081/");
}

#[test]
fn empty_metadata_class_and_missing_fields() {
    let mut body = java_client_body();
    body["instance"]["metadata"] = json!({"@class": "java.util.Collections$EmptyMap"});
    body["instance"]["hostName"] = json!("");
    body["instance"]
        .as_object_mut()
        .unwrap()
        .remove("dataCenterInfo");
    let envelope: InstanceEnvelope = serde_json::from_value(body).unwrap();
    assert!(envelope.instance.metadata.is_empty());
    // A missing dataCenterInfo reads as MyOwn; an empty hostName is refused by name.
    assert_eq!(
        envelope.instance.validate_for("ORDERS").unwrap_err(),
        InvalidInstance::Missing(vec!["hostName"])
    );
    let mut ok: InstanceEnvelope = serde_json::from_value(java_client_body()).unwrap();
    ok.instance.app = "INVENTORY".into();
    assert!(matches!(
        ok.instance.validate_for("orders"),
        Err(InvalidInstance::AppMismatch { .. })
    ));
}

#[test]
fn overrides_win_unless_unknown() {
    let mut i = serde_json::from_value::<InstanceEnvelope>(java_client_body())
        .unwrap()
        .instance;
    assert_eq!(i.effective_status(), InstanceStatus::Up);
    i.overridden_status = InstanceStatus::OutOfService;
    assert_eq!(i.effective_status(), InstanceStatus::OutOfService);
    assert_eq!(i.to_service_instance().status, InstanceStatus::OutOfService);
}

fn status() -> impl Strategy<Value = InstanceStatus> {
    proptest::sample::select(InstanceStatus::ALL.to_vec())
}

prop_compose! {
    fn instance()(
        app in "[A-Z][A-Z0-9-]{0,8}",
        host in "[a-z][a-z0-9.]{0,12}",
        port in 1u16..,
        secure in any::<bool>(),
        status in status(),
        overridden in status(),
        metadata in proptest::collection::btree_map("[a-z][a-z.]{0,6}", "[ -~]{0,8}", 0..4),
        dirty in any::<u64>(),
        lease in proptest::option::of((1u64..600, 1u64..600)),
    ) -> InstanceInfo {
        let service = ServiceInstance::new(app.to_ascii_lowercase(), host, port)
            .with_scheme(if secure { Scheme::Https } else { Scheme::Http })
            .with_status(status);
        let mut info = InstanceInfo::from_service_instance(&service, 10, 30);
        info.overridden_status = overridden;
        info.metadata = metadata;
        info.last_dirty_timestamp = FlexU64(dirty);
        info.lease_info = lease.map(|(r, d)| LeaseInfo {
            renewal_interval_in_secs: FlexU64(r),
            duration_in_secs: FlexU64(d),
            ..LeaseInfo::default()
        });
        info
    }
}

proptest! {
    /// Whatever msa writes, it reads back the same.
    #[test]
    fn instances_round_trip(info in instance()) {
        let envelope = InstanceEnvelope { instance: info };
        let text = serde_json::to_string(&envelope).unwrap();
        let back: InstanceEnvelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, envelope);
    }

    /// A registry round-trips, and one application or one instance written as a single
    /// object (as some clients do) reads the same as a one-element array.
    #[test]
    fn applications_round_trip_and_single_objects_decode(
        apps in proptest::collection::vec(proptest::collection::vec(instance(), 1..4), 1..4),
        delta in any::<u32>(),
    ) {
        let applications = Applications {
            versions_delta: delta.to_string(),
            apps_hashcode: String::new(),
            application: apps
                .into_iter()
                .map(|instances| Application { name: instances[0].app.clone(), instance: instances })
                .collect(),
        };
        let applications = Applications { apps_hashcode: applications.hashcode(), ..applications };
        let envelope = ApplicationsEnvelope { applications };
        let value = serde_json::to_value(&envelope).unwrap();
        let back: ApplicationsEnvelope = serde_json::from_value(value.clone()).unwrap();
        prop_assert_eq!(&back, &envelope);

        let first = &envelope.applications.application[0];
        let single = json!({"applications": {
            "versions__delta": delta,
            "apps__hashcode": envelope.applications.apps_hashcode,
            "application": {"name": first.name, "instance": value["applications"]["application"][0]["instance"][0]},
        }});
        let read: ApplicationsEnvelope = serde_json::from_value(single).unwrap();
        prop_assert_eq!(read.applications.application.len(), 1);
        prop_assert_eq!(&read.applications.application[0].instance[..], &first.instance[..1]);
        prop_assert_eq!(read.applications.versions_delta, delta.to_string());
    }
}

proptest! {
    /// The XML form round-trips too.
    #[test]
    fn instances_round_trip_through_xml(info in instance()) {
        let envelope = InstanceEnvelope { instance: info };
        let text = xml::to_string(&envelope).unwrap();
        let back: InstanceEnvelope = xml::from_str(&text).unwrap();
        prop_assert_eq!(back, envelope);
    }

    /// Registries round-trip through XML, whether an application holds one instance (one
    /// element, read as a single object) or several.
    #[test]
    fn applications_round_trip_through_xml(
        apps in proptest::collection::vec(proptest::collection::vec(instance(), 1..4), 0..4),
        delta in any::<u32>(),
    ) {
        let application: Vec<Application> = apps
            .into_iter()
            .map(|instances| Application { name: instances[0].app.clone(), instance: instances })
            .collect();
        let applications = Applications { versions_delta: delta.to_string(), apps_hashcode: String::new(), application };
        let applications = Applications { apps_hashcode: applications.hashcode(), ..applications };
        let envelope = ApplicationsEnvelope { applications };
        let text = xml::to_string(&envelope).unwrap();
        let back: ApplicationsEnvelope = xml::from_str(&text).unwrap();
        prop_assert_eq!(back, envelope);
    }
}

#[test]
fn reads_eureka_xml_as_py_eureka_client_sees_it() {
    let text = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<applications>
  <versions__delta>1</versions__delta>
  <apps__hashcode>UP_1_</apps__hashcode>
  <application>
    <name>ORDERS</name>
    <instance>
      <instanceId>host:orders:8081</instanceId>
      <hostName>host</hostName>
      <app>ORDERS</app>
      <ipAddr>127.0.0.1</ipAddr>
      <status>UP</status>
      <overriddenstatus>UNKNOWN</overriddenstatus>
      <port enabled="true">8081</port>
      <securePort enabled="false">443</securePort>
      <countryId>1</countryId>
      <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo">
        <name>MyOwn</name>
      </dataCenterInfo>
      <leaseInfo>
        <renewalIntervalInSecs>30</renewalIntervalInSecs>
        <durationInSecs>90</durationInSecs>
      </leaseInfo>
      <metadata>
        <zone>eu&amp;1</zone>
      </metadata>
      <vipAddress>orders</vipAddress>
      <isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>
      <lastDirtyTimestamp>1700000000000</lastDirtyTimestamp>
      <actionType>ADDED</actionType>
    </instance>
  </application>
</applications>"#;
    let envelope: ApplicationsEnvelope = xml::from_str(text).unwrap();
    let apps = envelope.applications;
    assert_eq!(apps.apps_hashcode, "UP_1_");
    let instance = &apps.application[0].instance[0];
    assert_eq!(
        instance.port,
        Port {
            port: 8081,
            enabled: FlexBool(true)
        }
    );
    assert_eq!(instance.metadata["zone"], "eu&1");
    assert_eq!(
        instance.lease_info.as_ref().unwrap().duration_in_secs,
        FlexU64(90)
    );
    assert_eq!(instance.action_type, Some(ActionType::Added));
    assert!(xml::from_str::<ApplicationsEnvelope>("<applications><unclosed>").is_err());
    assert!(xml::from_str::<ApplicationsEnvelope>("").is_err());
}

/// `text` with `edits` applied: each replaces one byte (at a position taken modulo the
/// length) with another, or inserts it.
fn mutate(text: &str, edits: &[(usize, u8, bool)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for &(at, byte, insert) in edits {
        let at = at % (bytes.len() + 1);
        if insert || at == bytes.len() {
            bytes.insert(at, byte);
        } else {
            bytes[at] = byte;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    /// Hostile bodies: any text, and registrations with bytes changed, decode or are an
    /// error, as JSON and as XML. Longer runs:
    /// `PROPTEST_CASES=100000 cargo test -p msa-discovery --lib hostile`.
    #[test]
    fn hostile_bodies_decode_or_are_errors(
        text in "\\PC{0,300}",
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..12),
    ) {
        let _ = serde_json::from_str::<InstanceEnvelope>(&text);
        let _ = xml::from_str::<InstanceEnvelope>(&text);
        let _ = xml::from_str::<ApplicationsEnvelope>(&text);
        let body = java_client_body();
        let json = mutate(&body.to_string(), &edits);
        let _ = serde_json::from_str::<InstanceEnvelope>(&json);
        let envelope: InstanceEnvelope = serde_json::from_value(body).unwrap();
        let as_xml = mutate(&xml::to_string(&envelope).unwrap(), &edits);
        let _ = xml::from_str::<InstanceEnvelope>(&as_xml);
    }

    /// Nesting far past the limit is an error, never a stack overflow (shallow nesting
    /// may decode: unknown elements are ignored, as Eureka's own decoder does).
    #[test]
    fn hostile_nesting_is_refused(depth in 1usize..60_000, json in any::<bool>()) {
        if json {
            let text = format!("{{\"instance\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
            prop_assert!(serde_json::from_str::<InstanceEnvelope>(&text).is_err());
        } else {
            let text = format!("<instance>{}{}</instance>", "<a>".repeat(depth), "</a>".repeat(depth));
            let decoded = xml::from_str::<InstanceEnvelope>(&text);
            if depth + 1 > xml::MAX_DEPTH {
                prop_assert!(decoded.unwrap_err().to_string().contains("deeper"));
            }
        }
    }
}
