use teekms_attest::snp::Product;

use crate::cli::{CollateralCmd, ProductArg, RealTee};
use crate::cmd::format_time;
use crate::failure::{CmdResult, Failure};
use crate::paths;

pub async fn run(cmd: CollateralCmd) -> CmdResult {
    match cmd {
        CollateralCmd::Show {
            dir,
            at,
            warn_within,
            json,
        } => show(dir, at, warn_within, json),
        CollateralCmd::Fetch {
            tee,
            evidence,
            url,
            product,
            output,
        } => fetch(tee, &evidence, &url, product, &output).await,
    }
}

async fn fetch(
    tee: RealTee,
    evidence: &std::path::Path,
    url: &str,
    product: Option<ProductArg>,
    output: &std::path::Path,
) -> CmdResult {
    let tee = super::evidence::tee_kind(tee);
    let product = product.map(|p| match p {
        ProductArg::Milan => Product::Milan,
        ProductArg::Genoa => Product::Genoa,
        ProductArg::Turin => Product::Turin,
    });
    let bytes = paths::read(evidence, "evidence", 1024 * 1024)?;
    let plan = teekms_attest::collateral::fetch_plan(tee, &bytes, product)
        .map_err(|e| Failure::usage(format!("{}: {e}", evidence.display())))?;
    let files = teekms_client::fetch::fetch_collateral(url, &plan).await?;
    std::fs::create_dir_all(output)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", output.display())))?;
    for (name, contents) in &files.files {
        paths::write_atomic(&output.join(name), contents, 0o644)?;
    }
    println!(
        "fetched {} collateral files into {}; check them with `teekms collateral show {}`",
        files.files.len(),
        output.display(),
        output.display()
    );
    Ok(())
}

fn show(dir: std::path::PathBuf, at: Option<String>, warn_within: String, json: bool) -> CmdResult {
    let now = super::time_arg(&at)?;
    let window = teekms_attest::policy::parse_duration(&warn_within)
        .map_err(|e| Failure::usage(format!("--warn-within: {e}")))?;
    let files = super::evidence::read_collateral_dir(&dir)?;
    if files.files.is_empty() {
        return Err(
            Failure::usage(format!("{} holds no collateral files", dir.display()))
                .hint("see spec/evidence-v1.md for the file names"),
        );
    }
    let items = files.describe();
    let expired: Vec<&str> = items
        .iter()
        .filter(|i| i.expires.is_some_and(|e| e < now) || i.issued.is_some_and(|s| s > now))
        .map(|i| i.file.as_str())
        .collect();
    for i in &items {
        if let Some(e) = i.expires
            && e >= now
            && e - now <= window
        {
            eprintln!(
                "warning: {} expires {} (within {warn_within}); fetch fresh collateral",
                i.file,
                format_time(e)
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({ "at": now, "items": items, "invalid_now": expired })
        );
    } else {
        for i in &items {
            let t = |v: Option<u64>| v.map(format_time).unwrap_or_else(|| "-".into());
            println!(
                "{:<30} {:<21} {:<21} {}",
                i.file,
                t(i.issued),
                t(i.expires),
                i.covers
            );
        }
    }
    if expired.is_empty() {
        Ok(())
    } else {
        Err(Failure::rejected(format!(
            "not valid at {}: {}",
            format_time(now),
            expired.join(", ")
        ))
        .hint(
            "fetch fresh collateral (Intel PCS / a PCCS, AMD KDS) and copy it to the offline site",
        ))
    }
}
