//! The impact of a job: the analysis scores (complexity, lines of code) of
//! each file it touched, before and after, so operators can see whether a
//! pipeline improves the code. The measure is the one the monitor's
//! analysis uses ([`orchex_core::analysis::Indentation`]).

use orchex_core::FileImpact;
use orchex_core::analysis::Indentation;

/// Files larger than this are not measured (generated blobs, binaries).
const MAX_MEASURED_BYTES: usize = 4 * 1024 * 1024;

/// The impact on one file, or `None` when neither side is measurable text.
pub(crate) fn file_impact(
    path: &str,
    before: Option<&[u8]>,
    after: Option<&[u8]>,
) -> Option<FileImpact> {
    let measure = |bytes: Option<&[u8]>| -> Option<Indentation> {
        let bytes = bytes?;
        (bytes.len() <= MAX_MEASURED_BYTES && !bytes.contains(&0))
            .then(|| Indentation::measure(bytes))
    };
    let (before, after) = (measure(before), measure(after));
    if before.is_none() && after.is_none() {
        return None;
    }
    let before = before.unwrap_or_default();
    let after = after.unwrap_or_default();
    Some(FileImpact {
        path: path.to_owned(),
        complexity_before: before.complexity(),
        complexity_after: after.complexity(),
        loc_before: before.lines,
        loc_after: after.lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impact_compares_before_and_after() {
        let impact = file_impact(
            "a.rs",
            Some(b"fn f() {\n        deep();\n}\n"),
            Some(b"fn f() {\n    shallow();\n}\n"),
        )
        .unwrap();
        assert!(impact.complexity_after < impact.complexity_before);
        assert_eq!((impact.loc_before, impact.loc_after), (3, 3));
        let created = file_impact("b.rs", None, Some(b"x\n")).unwrap();
        assert_eq!(created.loc_before, 0);
        assert!(file_impact("bin", Some(&[0, 1, 2]), None).is_none());
    }
}
