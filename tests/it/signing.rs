use switchyard_shared::webhooks::signing;

/// Standard Webhooks reference vector (libraries/rust/src/lib.rs `test_sign`).
#[test]
fn signature_matches_the_standard_webhooks_golden_vector() {
    let key = signing::secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let sig = signing::sign(
        &key,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1_649_367_553,
        br#"{"email":"test@example.com","username":"test_user"}"#,
    );
    assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}
