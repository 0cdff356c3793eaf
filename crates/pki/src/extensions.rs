//! Extensions rcgen does not write itself, encoded with yasna.

use yasna::Tag;
use yasna::models::ObjectIdentifier;

const OID_AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_AD_CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];
const OID_CERTIFICATE_POLICIES: &[u64] = &[2, 5, 29, 32];
/// CA/B Forum domain-validated policy (BR 7.1.6.1).
const OID_CABF_DOMAIN_VALIDATED: &[u64] = &[2, 23, 140, 1, 2, 1];

/// authorityInfoAccess with an OCSP responder and a caIssuers URL (RFC 5280 4.2.2.1).
pub(crate) fn authority_info_access(
    ocsp_url: Option<&str>,
    ca_issuers_url: Option<&str>,
) -> Option<rcgen::CustomExtension> {
    let entries: Vec<(&[u64], &str)> =
        [(OID_AD_OCSP, ocsp_url), (OID_AD_CA_ISSUERS, ca_issuers_url)]
            .into_iter()
            .filter_map(|(oid, url)| url.map(|u| (oid, u)))
            .collect();
    if entries.is_empty() {
        return None;
    }
    let content = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            for (method, url) in &entries {
                writer.next().write_sequence(|writer| {
                    writer
                        .next()
                        .write_oid(&ObjectIdentifier::from_slice(method));
                    writer
                        .next()
                        .write_tagged_implicit(Tag::context(6), |writer| {
                            writer.write_ia5_string(url)
                        });
                });
            }
        });
    });
    Some(rcgen::CustomExtension::from_oid_content(
        OID_AUTHORITY_INFO_ACCESS,
        content,
    ))
}

/// certificatePolicies asserting the CA/B Forum domain-validated policy.
pub(crate) fn cabf_domain_validated_policy() -> rcgen::CustomExtension {
    let content = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_sequence(|writer| {
                writer
                    .next()
                    .write_oid(&ObjectIdentifier::from_slice(OID_CABF_DOMAIN_VALIDATED));
            });
        });
    });
    rcgen::CustomExtension::from_oid_content(OID_CERTIFICATE_POLICIES, content)
}
