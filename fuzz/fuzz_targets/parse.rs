//! Fuzz the Dockerfile parser, the typed-instruction layer and the outline: any bytes
//! must give a result or an error, never a panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = strata_frontend::parse(data) else { return };
    let _ = parsed.dump();
    let Ok(df) = strata_frontend::instructions::parse_dockerfile(&parsed) else { return };
    let _ = strata_frontend::outline::targets(&df).to_text();
    let opts = strata_frontend::outline::OutlineOptions::for_platforms("linux/amd64", "linux/arm64", None);
    if let Ok(o) = strata_frontend::outline::outline(&df, &opts) {
        let _ = o.to_text();
    }
});
