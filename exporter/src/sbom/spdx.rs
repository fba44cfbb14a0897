//! Packages → an SPDX 2.3 JSON document: the image as the root package the document
//! describes, containing every package found. Output depends on its input only (plus
//! the clock when no creation time is given): packages are sorted, ids and the document
//! namespace derive from hashes of the content.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use strata_oci::digest::Digest;
use strata_oci::names::rfc3339;

use super::{Package, SbomSubject};

/// The SPDX id of the image's package.
pub const IMAGE_ID: &str = "SPDXRef-Image";
const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
const NOASSERTION: &str = "NOASSERTION";
/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write with four year digits.
const LAST_WRITABLE_SECOND: i64 = 253_402_300_799;
/// The longest package name carried into an SPDX id.
const ID_NAME_MAX: usize = 64;

/// The SPDX 2.3 document for an image's packages.
pub fn spdx_document(packages: &[Package], subject: &SbomSubject) -> Value {
    let mut sorted: Vec<&Package> = packages.iter().collect();
    sorted.sort();
    sorted.dedup();
    let created = subject.created.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    });

    let mut spdx_packages = vec![image_package(subject)];
    let mut relationships =
        vec![json!({"spdxElementId": DOCUMENT_ID, "relationshipType": "DESCRIBES", "relatedSpdxElement": IMAGE_ID})];
    let mut ids = BTreeSet::new();
    for package in &sorted {
        let id = unique_id(&mut ids, package_id(package));
        relationships
            .push(json!({"spdxElementId": IMAGE_ID, "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        spdx_packages.push(spdx_package(package, id));
    }

    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": DOCUMENT_ID,
        "name": image_name(subject),
        "documentNamespace": document_namespace(&sorted, subject),
        "creationInfo": {
            "created": rfc3339(created.clamp(0, LAST_WRITABLE_SECOND)),
            "creators": [format!("Tool: {}", subject.tool)],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

fn image_package(subject: &SbomSubject) -> Value {
    json!({
        "SPDXID": IMAGE_ID,
        "name": image_name(subject),
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!("container image, platform {}", subject.platform),
    })
}

/// The subject's name, or `image` when it is blank (SPDX names must not be empty).
fn image_name(subject: &SbomSubject) -> &str {
    if subject.name.trim().is_empty() {
        "image"
    } else {
        &subject.name
    }
}

fn spdx_package(package: &Package, id: String) -> Value {
    let mut spdx = json!({
        "SPDXID": id,
        "name": package.name,
        "versionInfo": package.version,
        "downloadLocation": NOASSERTION,
        "filesAnalyzed": false,
        "licenseConcluded": NOASSERTION,
        "licenseDeclared": NOASSERTION,
        "copyrightText": NOASSERTION,
        "sourceInfo": format!("layer {} {} at {}", package.layer_index, package.layer, package.location),
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": package.purl,
        }],
    });
    if let Some(license) = &package.license {
        spdx["licenseComments"] = json!(format!("declared license (as written by the package): {license}"));
    }
    spdx
}

/// `SPDXRef-Package-<ecosystem>-<name>-<8 hex of sha256(purl)>`, only `[A-Za-z0-9.-]`.
pub fn package_id(package: &Package) -> String {
    let name: String = package
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .take(ID_NAME_MAX)
        .collect();
    let hash = Digest::of_bytes(package.purl.as_bytes());
    format!("SPDXRef-Package-{}-{name}-{}", package.ecosystem, &hash.hex()[..8])
}

/// The id itself, or (when an earlier package has it: the same purl found in two places)
/// the id with the first free `-2`, `-3`, … suffix.
fn unique_id(taken: &mut BTreeSet<String>, id: String) -> String {
    let mut candidate = id.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{id}-{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// `https://spdx.org/spdxdocs/strata/<name>-<hash>`: the hash covers the subject and the
/// packages, so the same content always gets the same namespace and different content a
/// different one.
fn document_namespace(sorted: &[&Package], subject: &SbomSubject) -> String {
    let content = json!({
        "name": subject.name,
        "platform": subject.platform,
        "created": subject.created,
        "tool": subject.tool,
        "packages": sorted,
    });
    let hash = Digest::of_bytes(content.to_string().as_bytes());
    let name: String = subject
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '-' })
        .take(ID_NAME_MAX)
        .collect();
    format!("https://spdx.org/spdxdocs/strata/{name}-{}", &hash.hex()[..32])
}
