// Measures every slide of a Marp deck rendered to HTML: a slide overflows
// when any element of it reaches outside its 1280x720 box, where Marp clips
// it. Chromium runs this after the page loads (see .ci/slides-fit) and the
// result is read back from the page as lines `overflow N "Heading" ...`.
//
// Marp scales wide code blocks down in the page itself (its auto-scaling
// elements), after the load and frame by frame: measuring at once would see
// some of them before and some after. So the page is measured again and
// again until five measures in a row agree, and only then reported.
function measure() {
  const lines = [];
  const sections = document.querySelectorAll("svg > foreignObject > section");
  sections.forEach((section, index) => {
    const box = section.getBoundingClientRect();
    // The svg may be scaled to the window: measure in the slide's own pixels.
    const scale = box.width / section.offsetWidth || 1;
    let below = 0;
    let right = 0;
    for (const element of section.querySelectorAll("*")) {
      const rect = element.getBoundingClientRect();
      if (rect.width === 0 && rect.height === 0) continue;
      below = Math.max(below, (rect.bottom - box.bottom) / scale, (box.top - rect.top) / scale);
      right = Math.max(right, (rect.right - box.right) / scale, (box.left - rect.left) / scale);
    }
    const heading = section.querySelector("h1, h2, h3");
    const title = heading ? heading.textContent.trim() : "";
    if (below > 1 || right > 1) {
      lines.push(`overflow ${index + 1} "${title}" ${Math.ceil(below)}px down ${Math.ceil(right)}px across`);
    }
  });
  lines.push(`measured ${sections.length} slides`);
  return lines.join("\n");
}

function report(text) {
  const out = document.createElement("pre");
  out.id = "slides-fit";
  out.textContent = text;
  document.body.appendChild(out);
}

function settle(previous, agreeing, rounds) {
  const now = measure();
  const same = now === previous ? agreeing + 1 : 0;
  if (same >= 4) return report(now);
  if (rounds > 100) return report(`unsettled: the layout still changed after ${rounds} measures`);
  setTimeout(() => settle(now, same, rounds + 1), 100);
}

window.addEventListener("load", () => settle(null, 0, 0));
