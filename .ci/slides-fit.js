// Measures every slide of a Marp deck rendered to HTML: a slide overflows
// when any element of it reaches outside its 1280x720 box, where Marp clips
// it. Chromium runs this after the page loads (see .ci/slides-fit) and the
// result is read back from the page as lines `overflow N "Heading" ...`.
//
// Marp scales wide code blocks down in the page itself (its auto-scaling
// elements), after the load: measuring at once would see some of them
// before and some after. The measure waits for the layout to settle.
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
  const out = document.createElement("pre");
  out.id = "slides-fit";
  out.textContent = lines.join("\n");
  document.body.appendChild(out);
}

window.addEventListener("load", () => setTimeout(measure, 3000));
