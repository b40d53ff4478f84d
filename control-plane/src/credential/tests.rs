//! TokenReview against recorded API server responses (`tokenreview.json`,
//! replayed in order): accepted, expired, wrong audience (refused by the
//! API server, and answered without our audience), not bound to a pod, and
//! API errors, which refuse the certificate (fail closed).

use super::*;
use crate::source::kubernetes::replay as serve;

const TOKEN: &str =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJhdWQiOlsibWVzaC1jb250cm9sLXBsYW5lIl19.c2lnbmF0dXJl";

#[tokio::test]
async fn token_reviews_in_the_order_recorded() {
    let (addr, replay) = serve("tokenreview.json").await;
    let creds = Credentials::TokenReview(Api::plain(&format!("http://{addr}")).unwrap());

    let ok = creds.verify(TOKEN).await.unwrap();
    assert_eq!(
        ok,
        Claims {
            namespace: "shop".into(),
            service_account: "api".into(),
            pod: Some("api-6f8d9c7b5-x2k4q".into()),
        }
    );
    // The review asks for our audience, with the token as given.
    let sent = &replay.bodies()[0];
    assert_eq!(sent["spec"]["audiences"], json!(["mesh-control-plane"]));
    assert_eq!(sent["spec"]["token"], TOKEN);

    // (message, whether the API server could not answer)
    let cases = [
        ("service account token has expired", false),
        ("is invalid for the target audiences", false),
        ("is not for the audience mesh-control-plane", false),
        ("not bound to a pod", false),
        ("cannot create resource \"tokenreviews\"", true),
        ("etcdserver: request timed out", true),
    ];
    for (message, unavailable) in cases {
        let e = creds.verify(TOKEN).await.unwrap_err();
        assert!(e.to_string().contains(message), "{message}: {e}");
        // The token is a secret: never in a refusal.
        assert!(!e.to_string().contains(TOKEN));
        let expected = if unavailable {
            tonic::Code::Unavailable
        } else {
            tonic::Code::Unauthenticated
        };
        assert_eq!(tonic::Status::from(e).code(), expected, "{message}");
    }
    // Unreachable API server: refused, not waved through.
    drop(replay);
    let gone = Credentials::TokenReview(mesh_kube_api::replay::unreachable());
    assert!(matches!(
        gone.verify(TOKEN).await,
        Err(Error::CredentialCheckUnavailable(_))
    ));
}

#[tokio::test]
async fn what_is_not_a_token_never_reaches_the_api_server() {
    let (addr, replay) = serve("tokenreview.json").await;
    let creds = Credentials::TokenReview(Api::plain(&format!("http://{addr}")).unwrap());
    for bad in ["", "   ", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
        assert!(matches!(
            creds.verify(bad).await,
            Err(Error::BadServiceAccountToken(_))
        ));
    }
    assert!(replay.requests().is_empty());
}
