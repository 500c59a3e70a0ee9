//! When KILN_OPENCHAMI_REFERENCE names a directory without the swagger
//! documents, the doubles do not start, and say why. (Without it, and without
//! ../shared/reference, they start unchecked and report the check skipped.)
//! (Alone in its test binary: it changes an environment variable.)

use kiln_testsupport::openchami::{reference_dir, BssTestDouble};

#[tokio::test]
async fn the_doubles_say_when_the_swagger_reference_is_absent() {
    let empty = tempfile::tempdir().unwrap();
    std::env::set_var("KILN_OPENCHAMI_REFERENCE", empty.path());
    let e = reference_dir().unwrap_err();
    assert!(
        e.contains("is absent") && e.contains("bss-swagger.yaml"),
        "{e}"
    );
    let e = BssTestDouble::start(&[], None).await.err().unwrap();
    assert!(e.contains("is absent"), "{e}");
}
