//! The report's pages in headless Chromium, with the network off: the index renders, every image
//! loads, its filters and sort (driven through the URL state) reduce and reorder the rows; a
//! click on a graph node highlights exactly that node's edges; a feature page draws its windows
//! and its links resolve. Skipped (with a message) only when Chromium is not installed outside
//! CI; with CI=true a missing Chromium fails the test. Screenshots of the index, one feature page
//! and the graph viewer are left in the report folder (VOLTLENS_REPORT_DIR keeps it).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "report.rs"]
#[allow(dead_code)]
mod report;

use report::fixture;

/// Debian's `chromium`, or the usual other names.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let out = Command::new("which").arg(name).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// Runs headless Chromium on `url` with `extra` flags and a fresh profile, the network off (every
/// host name fails to resolve and every request goes to a closed local port); returns stdout.
fn run_chromium(bin: &Path, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .args(["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--window-size=1400,1000")
        // Lets the page's load handler run before the DOM is dumped.
        .arg("--virtual-time-budget=10000")
        .args(extra)
        .arg(url)
        .output()
        .expect("starting chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-id` of the first row of the features table in a dumped DOM.
fn first_row(dom: &str) -> String {
    let body = &dom[dom.find("<tbody>").expect("table body")..];
    let at = body.find("data-id=\"").expect("a row") + "data-id=\"".len();
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

/// Chromium, or None (and a message) where a skip is allowed.
fn browser() -> Option<PathBuf> {
    let bin = chromium();
    if bin.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but chromium is not installed");
        eprintln!("SKIPPED: chromium not installed (apt-get install chromium); the browser test did not run");
    }
    bin
}

/// The value of `attr="…"` on the page's `<body>` in a dumped DOM.
fn body_attr(dom: &str, attr: &str) -> Option<String> {
    let body = &dom[dom.find("<body")?..];
    let body = &body[..body.find('>')?];
    let at = body.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(body[at..at + body[at..].find('"')?].to_owned())
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.canonicalize().unwrap().display())
}

#[test]
fn index_renders_loads_every_image_and_sorts_by_hash() {
    let Some(bin) = browser() else { return };
    let fx = fixture::get();
    let index = fx.report.join("index.html").canonicalize().unwrap();
    let url = format!("file://{}", index.display());

    let shot = fx.report.join("screenshot.png");
    run_chromium(&bin, &url, &[format!("--screenshot={}", shot.display())]);
    assert_eq!(report::png_size(&shot), (1400, 1000));

    let dom = run_chromium(&bin, &url, &["--dump-dom".into()]);
    let images = dom.find("data-images-loaded=\"").map(|at| {
        let rest = &dom[at + "data-images-loaded=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    });
    let images = images.expect("the page's load handler ran");
    let (ok, total) = images.split_once('/').unwrap();
    assert_eq!(ok, total, "images loaded: {images}");
    // Overview figures are the PNGs at the top of the report folder (cards live in features/).
    let overview = std::fs::read_dir(&fx.report)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".png") && !name.starts_with("screenshot"))
        .count();
    assert!(overview >= 3, "at least the three standard overview figures, found {overview}");
    assert_eq!(total.parse::<usize>().unwrap(), fx.summary.live_features + overview, "one thumbnail per live feature and one image per overview figure: {images}");

    let unsorted = first_row(&dom);
    let densest = fx.mined.features.iter().max_by(|a, b| a.density.total_cmp(&b.density)).map(|f| format!("L{}_F{}", f.layer, f.feature)).unwrap();
    let sorted = run_chromium(&bin, &format!("{url}#sort=-density"), &["--dump-dom".into()]);
    assert!(sorted.contains("data-sorted-by=\"-density\""), "the hash triggered a sort");
    assert_eq!(first_row(&sorted), densest, "densest feature first after #sort=-density");
    assert_ne!(unsorted, densest, "the fixture's default order must differ for the check to mean anything");
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn index_filters_reduce_the_rows_and_live_in_the_url() {
    let Some(bin) = browser() else { return };
    let fx = fixture::get();
    let url = file_url(&fx.report.join("index.html"));
    let live: Vec<_> = fx.mined.features.iter().filter(|f| f.density > 0.0).collect();
    let shown = |hash: &str| -> usize {
        let dom = run_chromium(&bin, &format!("{url}#{hash}"), &["--dump-dom".into()]);
        body_attr(&dom, "data-shown").unwrap_or_else(|| panic!("filters ran for #{hash}")).parse().unwrap()
    };
    let layer1 = live.iter().filter(|f| f.layer == 1).count();
    assert!(layer1 > 0 && layer1 < live.len());
    assert_eq!(shown(""), live.len(), "no filter, every row");
    assert_eq!(shown("layer=1"), layer1, "layer filter");
    let accepted = fx.labels.iter().filter(|l| l.accepted && l.density > 0.0).count();
    assert!(accepted > 0 && accepted < live.len());
    assert_eq!(shown("status=accepted"), accepted, "accepted labels only");
    assert_eq!(shown("status=unexplained"), live.len() - accepted, "unexplained only");
    let dense = live.iter().filter(|f| f.density >= 0.5).count();
    assert_eq!(shown("density_min=50"), dense, "density in percent");
    // A runner-up sentence finds its feature even though the label column shows the winner.
    let (runner, owner) = fx
        .labels
        .iter()
        .filter(|l| l.density > 0.0 && l.accepted)
        .find_map(|l| l.candidates.get(1).map(|c| (c.sentence.clone(), format!("L{}_F{}", l.layer, l.feature))))
        .expect("an accepted feature with a runner-up");
    let encoded: String = runner.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    let dom = run_chromium(&bin, &format!("{url}#q={encoded}"), &["--dump-dom".into()]);
    let row = &dom[dom.find(&format!("<tr data-id=\"{owner}\"")).expect("row")..];
    let row = &row[..row.find('>').unwrap()];
    assert!(!row.contains("display: none"), "'{runner}' (a runner-up of {owner}) keeps its row: {row}");
    let n: usize = body_attr(&dom, "data-shown").unwrap().parse().unwrap();
    assert!(n >= 1 && n < live.len(), "search narrows the table: {n}");
}

/// (source, target) of the graph viewer's edge paths whose markup contains `marker`, sorted.
fn drawn_edges(dom: &str, marker: &str) -> Vec<(String, String)> {
    let mut edges: Vec<(String, String)> = dom
        .split("<path ")
        .filter(|p| p.contains(marker))
        .map(|p| {
            let get = |a: &str| {
                let at = p.find(&format!("{a}=\"")).unwrap() + a.len() + 2;
                p[at..at + p[at..].find('"').unwrap()].to_owned()
            };
            (get("data-source"), get("data-target"))
        })
        .collect();
    edges.sort();
    edges
}

#[test]
fn a_click_on_a_graph_node_highlights_exactly_its_edges() {
    let Some(bin) = browser() else { return };
    let fx = fixture::get();
    let page = fx.report.join("graph.html");
    let graph = fixture::graph();
    for node in ["1_0_3", "E_1_2"] {
        // threshold=0: every edge drawn.
        let dom = run_chromium(&bin, &format!("{}#node={node}&threshold=0", file_url(&page)), &["--dump-dom".into()]);
        assert_eq!(body_attr(&dom, "data-selected").as_deref(), Some(node), "the click selected the node");
        let highlighted = drawn_edges(&dom, "class=\"edge hl\"");
        let mut expected: Vec<(String, String)> = graph["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["source"].as_str().unwrap().to_owned(), l["target"].as_str().unwrap().to_owned()))
            .filter(|(s, t)| s == node || t == node)
            .collect();
        expected.sort();
        assert_eq!(highlighted, expected, "edges highlighted after clicking {node}");
        let faded = dom.matches("edge faded").count();
        assert_eq!(faded, graph["links"].as_array().unwrap().len() - expected.len(), "every other edge fades");
    }
    let dom = run_chromium(&bin, &file_url(&page), &["--dump-dom".into()]);
    assert!(!dom.contains("data-id=\"E_2_3\""), "an input without edges is not drawn");
    // At first each node keeps the edges into it of at least half its strongest incoming |weight|.
    let links = graph["links"].as_array().unwrap();
    let strongest_into = |target: &str| links.iter().filter(|l| l["target"] == target).map(|l| l["weight"].as_f64().unwrap().abs()).fold(0.0, f64::max);
    let mut expected: Vec<(String, String)> = links
        .iter()
        .filter(|l| l["weight"].as_f64().unwrap().abs() >= 0.5 * strongest_into(l["target"].as_str().unwrap()))
        .map(|l| (l["source"].as_str().unwrap().to_owned(), l["target"].as_str().unwrap().to_owned()))
        .collect();
    expected.sort();
    let drawn = drawn_edges(&dom, "class=\"edge");
    assert!(expected.len() < links.len(), "the fixture has edges below half of their target's strongest");
    assert_eq!(drawn, expected, "edges drawn at the default threshold");
    let shot = fx.report.join("screenshot-graph.png");
    run_chromium(&bin, &format!("{}#node=1_0_3", file_url(&page)), &[format!("--screenshot={}", shot.display())]);
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn a_feature_page_draws_its_windows_and_its_links_resolve() {
    let Some(bin) = browser() else { return };
    let fx = fixture::get();
    let page = fx.report.join("features/L0_F1.html");
    let dom = run_chromium(&bin, &file_url(&page), &["--dump-dom".into()]);
    assert_eq!(body_attr(&dom, "data-window").as_deref(), Some("0"), "feature.js drew the first window");
    for row in ["V", "I", "T", "SOC", "a"] {
        assert!(dom.contains(&format!("data-row=\"{row}\"")), "row {row} drawn");
    }
    let mut rest = dom.as_str();
    let mut links = 0;
    while let Some(at) = rest.find("href=\"") {
        rest = &rest[at + 6..];
        let target = &rest[..rest.find('"').unwrap()];
        let file = target.split('#').next().unwrap();
        if !file.is_empty() {
            assert!(page.parent().unwrap().join(file).is_file(), "link {target} does not resolve");
            links += 1;
        }
    }
    assert!(links >= 4, "back, next, card and neighbours: {links}");
    let shot = fx.report.join("screenshot-feature.png");
    run_chromium(&bin, &file_url(&page), &[format!("--screenshot={}", shot.display()), "--window-size=1400,2400".into()]);
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn no_page_asks_the_network_for_anything() {
    // The browser tests run with the network off; this checks the files themselves: no URL that
    // a browser would fetch, only the SVG namespace name.
    let fx = fixture::get();
    let mut files = vec![fx.report.join("index.html"), fx.report.join("graph.html"), fx.report.join("features/L0_F1.html")];
    files.extend(std::fs::read_dir(fx.report.join("assets")).unwrap().map(|e| e.unwrap().path()));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap().replace("http://www.w3.org/2000/svg", "");
        assert!(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "{} names a network URL", file.display());
    }
}
