// rvqkit codec page: hand-written vanilla JS (no build step, no CDN: the page must work offline).
// REST: /v1/info, /v1/encode (JSON codes), /v1/decode/json?n_q=k (WAV), /v1/quality (metrics per k).
// Live: /v1/stream/encode and
// /v1/stream/decode WebSockets. Waveforms and spectrograms are drawn here from the decoded audio.
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let inputBlob = null;
let inputName = "";
let audioCtx = null;

function ctx() {
  if (!audioCtx) audioCtx = new AudioContext();
  return audioCtx;
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return `${resp.status} ${body.error}: ${body.message}`;
  } catch (e) {
    return `HTTP ${resp.status}`;
  }
}

// ---- model facts ------------------------------------------------------------------------------------
async function loadInfo() {
  const resp = await fetch("/v1/info");
  info = await resp.json();
  $("model").textContent = `${info.model}: ${info.sample_rate} Hz, ${info.channels} ch, ` +
    `${info.frame_rate} frames/s, ${info.codebook_size} codes per codebook`;
  const sel = $("bandwidth");
  for (const bw of info.bandwidths) {
    const opt = document.createElement("option");
    const key = String(bw);
    opt.value = key;
    opt.textContent = `${bw} kbps (${info.codebooks[key.replace(/\.0$/, "")] ?? "?"} codebooks)`;
    sel.appendChild(opt);
  }
  sel.value = String(info.bandwidths.includes(6) ? 6 : info.bandwidths[0]);
}

// ---- input: file or microphone ----------------------------------------------------------------------
$("file").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  inputBlob = f;
  inputName = f.name;
  $("run").disabled = false;
  setStatus(`${f.name} (${(f.size / 1024).toFixed(0)} KiB) ready.`);
});

function wavFromFloat(channels, rate) {
  // 16-bit PCM WAV from a list of Float32Arrays (one per channel)
  const n = channels[0].length, c = channels.length;
  const buf = new ArrayBuffer(44 + n * c * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + n * c * 2, true); str(8, "WAVE"); str(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, c, true);
  v.setUint32(24, rate, true); v.setUint32(28, rate * c * 2, true); v.setUint16(32, c * 2, true);
  v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, n * c * 2, true);
  let o = 44;
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      const s = Math.max(-1, Math.min(1, channels[ch][i]));
      v.setInt16(o, s < 0 ? s * 32768 : s * 32767, true);
      o += 2;
    }
  }
  return new Blob([buf], { type: "audio/wav" });
}

$("record").addEventListener("click", async () => {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus(`No microphone: ${e.message}`, true);
    return;
  }
  const ac = ctx();
  await ac.resume();
  const src = ac.createMediaStreamSource(stream);
  const proc = ac.createScriptProcessor(4096, 1, 1);
  const parts = [];
  const want = 5 * ac.sampleRate;
  let got = 0;
  $("record").disabled = true;
  setStatus("Recording 5 s…");
  await new Promise((resolve) => {
    proc.onaudioprocess = (ev) => {
      if (got >= want) return;
      const x = new Float32Array(ev.inputBuffer.getChannelData(0));
      parts.push(x);
      got += x.length;
      if (got >= want) resolve();
    };
    src.connect(proc);
    proc.connect(ac.destination);
  });
  src.disconnect(); proc.disconnect();
  stream.getTracks().forEach((t) => t.stop());
  const all = new Float32Array(got);
  let o = 0;
  for (const p of parts) { all.set(p, o); o += p.length; }
  inputBlob = wavFromFloat([all.subarray(0, want)], ac.sampleRate);
  inputName = "microphone.wav";
  $("record").disabled = false;
  $("run").disabled = false;
  setStatus("Recorded 5 s.");
});

// ---- drawing ----------------------------------------------------------------------------------------
function mono(buffer) {
  const n = buffer.length, c = buffer.numberOfChannels, out = new Float32Array(n);
  for (let ch = 0; ch < c; ch++) {
    const d = buffer.getChannelData(ch);
    for (let i = 0; i < n; i++) out[i] += d[i] / c;
  }
  return out;
}

function fitCanvas(canvas) {
  const w = Math.max(200, Math.floor(canvas.clientWidth || 400));
  const h = Math.max(60, Math.floor(canvas.clientHeight || 80));
  canvas.width = w; canvas.height = h;
  return [canvas.getContext("2d"), w, h];
}

function peakOf(x) {
  let p = 0;
  for (let i = 0; i < x.length; i++) p = Math.max(p, Math.abs(x[i]));
  return p;
}

function drawWave(canvas, x) {
  // scaled so that the track's peak fills the height (the facts line gives the peak in dBFS)
  const [g, w, h] = fitCanvas(canvas);
  const gain = 1 / Math.max(peakOf(x), 1e-6);
  g.fillStyle = "#111"; g.fillRect(0, 0, w, h);
  g.strokeStyle = "#7fb3ff";
  g.beginPath();
  const per = x.length / w;
  for (let px = 0; px < w; px++) {
    let lo = 1, hi = -1;
    const a = Math.floor(px * per), b = Math.max(a + 1, Math.floor((px + 1) * per));
    for (let i = a; i < b && i < x.length; i++) { lo = Math.min(lo, x[i] * gain); hi = Math.max(hi, x[i] * gain); }
    if (lo > hi) { lo = hi = 0; }
    g.moveTo(px + 0.5, (1 - Math.max(-1, hi)) * h / 2);
    g.lineTo(px + 0.5, (1 - Math.min(1, lo)) * h / 2 + 1);
  }
  g.stroke();
}

function fft(re, im) {
  // in-place iterative radix-2 FFT (length a power of two); small and dependency-free
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = -2 * Math.PI / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2;
        const tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const ncr = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = ncr;
      }
    }
  }
}

function color(v) {
  // v in [0, 1] → dark blue, magenta, orange, pale yellow
  const stops = [[0, 0, 4], [80, 18, 123], [200, 60, 80], [252, 160, 40], [252, 253, 191]];
  const p = Math.max(0, Math.min(0.9999, v)) * (stops.length - 1), i = Math.floor(p), f = p - i;
  return stops[i].map((c, j) => Math.round(c + (stops[i + 1][j] - c) * f));
}

function drawSpectrogram(canvas, x) {
  const [g, w, h] = fitCanvas(canvas);
  const n = 512, win = new Float32Array(n);
  for (let i = 0; i < n; i++) win[i] = 0.5 - 0.5 * Math.cos(2 * Math.PI * i / n);
  const cols = w, hop = Math.max(1, (x.length - n) / cols);
  const img = g.createImageData(w, h);
  const re = new Float32Array(n), im = new Float32Array(n), bins = n / 2;
  const db = new Float32Array(cols * bins);
  let top = -Infinity;
  for (let c = 0; c < cols; c++) {
    const start = Math.floor(c * hop);
    for (let i = 0; i < n; i++) { re[i] = (x[start + i] || 0) * win[i]; im[i] = 0; }
    fft(re, im);
    for (let k = 0; k < bins; k++) {
      const v = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-10);
      db[c * bins + k] = v;
      if (v > top) top = v;
    }
  }
  for (let y = 0; y < h; y++) {
    const k = Math.min(bins - 1, Math.floor((1 - y / h) * bins));
    for (let c = 0; c < cols; c++) {
      const [r, gg, b] = color((db[c * bins + k] - (top - 80)) / 80);
      const o = (y * w + c) * 4;
      img.data[o] = r; img.data[o + 1] = gg; img.data[o + 2] = b; img.data[o + 3] = 255;
    }
  }
  g.putImageData(img, 0, 0);
}

// ---- quality per k ----------------------------------------------------------------------------------
function fmt(value, digits, unit) {
  return value === null ? "–" : `${value.toFixed(digits)}${unit ? " " + unit : ""}`;
}

function whyMissing(row, metric) {
  // the server's reason for a metric without a value ("si_sdr: silent original; ...")
  const part = row.skipped.split("; ").find((p) => p.startsWith(metric + ":"));
  return part ? part.slice(metric.length + 2) : "";
}

function showQuality(q) {
  const body = $("quality-table").querySelector("tbody");
  body.innerHTML = "";
  for (const row of q.rows) {
    const tr = document.createElement("tr");
    tr.dataset.k = String(row.k);
    const cells = [String(row.k), row.kbps.toFixed(2), fmt(row.si_sdr, 2), fmt(row.mel_distance, 2),
      fmt(row.stft_distance, 3)];
    const metrics = [null, null, "si_sdr", "mel_distance", "stft_distance"];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (metrics[i]) {
        td.className = metrics[i];
        if (row[metrics[i]] === null) td.title = whyMissing(row, metrics[i]);
      }
      tr.appendChild(td);
    });
    body.appendChild(tr);
    // next to the player of the same k
    const track = document.querySelector(`#results .track[data-k="${row.k}"] .metrics`);
    if (track) {
      track.textContent = `SI-SDR ${fmt(row.si_sdr, 2, "dB")} · log-mel ${fmt(row.mel_distance, 2, "dB")}` +
        ` · STFT ${fmt(row.stft_distance, 3)}`;
      if (row.skipped) track.title = row.skipped;
    }
  }
  const part = q.scored_seconds < q.seconds - 1e-6
    ? `the first ${q.scored_seconds.toFixed(2)} s of ${q.seconds.toFixed(2)} s`
    : `all ${q.seconds.toFixed(2)} s`;
  $("quality-note").textContent = `Each reconstruction against the original at ${q.sample_rate} Hz, ` +
    `${q.channels} ch, over ${part}, at ${q.bandwidth} kbps.`;
  $("quality-note").classList.remove("error");
  $("quality").hidden = false;
}

async function scoreEachK(bandwidth) {
  // errors here (e.g. the server is busy) are shown in the quality panel; the players stay
  const form = new FormData();
  form.append("file", inputBlob, "upload");
  try {
    const resp = await fetch(`/v1/quality?bandwidth=${encodeURIComponent(bandwidth)}`,
      { method: "POST", body: form });
    if (!resp.ok) throw new Error(await errorText(resp));
    showQuality(await resp.json());
    document.body.dataset.quality = "done";
  } catch (e) {
    $("quality-table").querySelector("tbody").innerHTML = "";
    $("quality-note").textContent = `No quality figures: ${e.message || e}`;
    $("quality-note").classList.add("error");
    $("quality").hidden = false;
    document.body.dataset.quality = "error";
  }
}

// ---- results ----------------------------------------------------------------------------------------
function addTrack(title, facts, blob, k) {
  const row = document.createElement("div");
  row.className = "track";
  row.dataset.k = String(k);
  const head = document.createElement("div");
  head.innerHTML = `<h3></h3><audio controls preload="auto"></audio><div class="facts muted"></div>` +
    `<div class="metrics"></div>`;
  head.querySelector("h3").textContent = title;
  head.querySelector(".facts").textContent = facts;
  const audio = head.querySelector("audio");
  audio.src = URL.createObjectURL(blob);
  const wave = document.createElement("canvas"), spec = document.createElement("canvas");
  wave.className = "wave"; spec.className = "spec";
  wave.title = "waveform"; spec.title = "spectrogram (0 Hz at the bottom, 80 dB range)";
  row.append(head, wave, spec);
  $("results").appendChild(row);
  return { row, wave, spec };
}

async function showTrack(title, facts, blob, k) {
  const t = addTrack(title, facts, blob, k);
  // decode at the model's rate (an OfflineAudioContext does not resample to the sound card's rate)
  const buffer = await new OfflineAudioContext(1, 1, info.sample_rate).decodeAudioData(await blob.arrayBuffer());
  t.row.dataset.samples = String(buffer.length);
  t.row.dataset.rate = String(buffer.sampleRate);
  const x = mono(buffer);
  const peak = peakOf(x);
  t.row.querySelector(".facts").textContent +=
    ` · ${(buffer.length / buffer.sampleRate).toFixed(2)} s · peak ${(20 * Math.log10(peak + 1e-12)).toFixed(1)} dBFS`;
  drawWave(t.wave, x);
  drawSpectrogram(t.spec, x);
}

$("run").addEventListener("click", async () => {
  if (!inputBlob) return;
  document.body.dataset.state = "busy";
  $("run").disabled = true;
  $("results").innerHTML = "";
  $("quality").hidden = true;
  delete document.body.dataset.quality;
  try {
    const bandwidth = $("bandwidth").value;
    setStatus(`Encoding at ${bandwidth} kbps…`);
    const form = new FormData();
    form.append("file", inputBlob, "upload");
    const resp = await fetch(`/v1/encode?bandwidth=${encodeURIComponent(bandwidth)}&format=json`,
      { method: "POST", body: form });
    if (!resp.ok) throw new Error(await errorText(resp));
    const codes = await resp.json();
    document.body.dataset.length = String(codes.length);
    await showTrack(`Original (${inputName})`, `${(inputBlob.size / 1024).toFixed(0)} KiB as uploaded`,
      inputBlob, 0);
    for (let k = 1; k <= codes.n_q; k++) {
      setStatus(`Decoding from ${k} of ${codes.n_q} codebooks…`);
      const r = await fetch(`/v1/decode/json?n_q=${k}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(codes),
      });
      if (!r.ok) throw new Error(await errorText(r));
      const kbps = (k * Math.log2(info.codebook_size) * info.frame_rate / 1000).toFixed(2);
      await showTrack(`${k} codebook${k > 1 ? "s" : ""} (${kbps} kbps)`,
        `${codes.frames} frames × ${k} codes`, await r.blob(), k);
    }
    setStatus(`Scoring each of the ${codes.n_q} reconstructions…`);
    await scoreEachK(bandwidth);
    setStatus(`Done: ${codes.n_q} reconstructions of ${(codes.length / codes.sample_rate).toFixed(2)} s.`);
    document.body.dataset.state = "done";
  } catch (e) {
    setStatus(String(e.message || e), true);
    document.body.dataset.state = "error";
  } finally {
    $("run").disabled = false;
  }
});

// ---- live mode ---------------------------------------------------------------------------------------
const live = { running: false };

function wsUrl(path) {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

function openSocket(path, start) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(path));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify(start));
    ws.onerror = () => reject(new Error(`cannot open ${path}`));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "ready") resolve([ws, msg]);
      else reject(new Error(`${msg.error}: ${msg.message}`));
    };
  });
}

async function startLive() {
  const status = $("live-status");
  status.classList.remove("error");
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    status.textContent = `No microphone: ${e.message}`;
    status.classList.add("error");
    return;
  }
  const ac = new AudioContext({ sampleRate: info.sample_rate });
  await ac.resume();
  const rate = ac.sampleRate, chunk = Math.round(0.08 * rate);
  Object.assign(live, { running: true, ac, mic, sent: [], sentSamples: 0, outSamples: 0, lat: [],
    frames: 0, next: 0 });
  try {
    const [dec, decReady] = await openSocket("/v1/stream/decode", { format: "f32le" });
    const [enc] = await openSocket("/v1/stream/encode",
      { sample_rate: rate, channels: 1, format: "f32le", bandwidth: Number($("bandwidth").value) });
    Object.assign(live, { enc, dec });
    const outChannels = decReady.channels, outRate = decReady.sample_rate;
    enc.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "codes") {
        live.frames += msg.codes[0].length;
        $("live-frames").textContent = String(live.frames);
        if (dec.readyState === WebSocket.OPEN) dec.send(ev.data);
      } else if (msg.type === "done") {
        if (dec.readyState === WebSocket.OPEN) dec.send(JSON.stringify({ type: "end" }));
      } else if (msg.type === "error") {
        status.textContent = `${msg.error}: ${msg.message}`;
      }
    };
    dec.onmessage = (ev) => {
      if (typeof ev.data === "string") return;
      const pcm = new Float32Array(ev.data), n = pcm.length / outChannels;
      const buf = ac.createBuffer(outChannels, n, outRate);
      for (let ch = 0; ch < outChannels; ch++) {
        const d = buf.getChannelData(ch);
        for (let i = 0; i < n; i++) d[i] = pcm[i * outChannels + ch];
      }
      live.outSamples += n;
      // latency of the last sample of this packet: now minus when the chunk holding it was sent
      const pos = live.outSamples * rate / outRate;
      const entry = live.sent.find((s) => s.end >= pos);
      if (entry) {
        live.lat.push(performance.now() - entry.t);
        if (live.lat.length > 50) live.lat.shift();
        $("latency").textContent = `${median(live.lat).toFixed(0)} ms`;
        document.body.dataset.liveLatency = String(median(live.lat));
      }
      live.sent = live.sent.filter((s) => s.end >= pos - chunk);
      const src = ac.createBufferSource();
      src.buffer = buf;
      src.connect(ac.destination);
      live.next = Math.max(live.next, ac.currentTime + 0.02);
      src.start(live.next);
      live.next += buf.duration;
    };
    const source = ac.createMediaStreamSource(mic);
    const proc = ac.createScriptProcessor(512, 1, 1);
    let pending = new Float32Array(0);
    proc.onaudioprocess = (ev) => {
      if (!live.running) return;
      const x = ev.inputBuffer.getChannelData(0);
      const joined = new Float32Array(pending.length + x.length);
      joined.set(pending); joined.set(x, pending.length);
      let o = 0;
      for (; o + chunk <= joined.length; o += chunk) {
        enc.send(joined.slice(o, o + chunk).buffer);
        live.sentSamples += chunk;
        live.sent.push({ end: live.sentSamples, t: performance.now() });
      }
      pending = joined.slice(o);
    };
    source.connect(proc);
    proc.connect(ac.destination);
    Object.assign(live, { source, proc });
    status.textContent = `streaming at ${rate} Hz in ${chunk}-sample chunks`;
    $("live-start").disabled = true;
    $("live-stop").disabled = false;
  } catch (e) {
    status.textContent = String(e.message || e);
    status.classList.add("error");
    stopLive();
  }
}

function stopLive() {
  live.running = false;
  if (live.enc && live.enc.readyState === WebSocket.OPEN) live.enc.send(JSON.stringify({ type: "end" }));
  if (live.source) live.source.disconnect();
  if (live.proc) live.proc.disconnect();
  if (live.mic) live.mic.getTracks().forEach((t) => t.stop());
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", stopLive);

loadInfo().catch((e) => setStatus(`cannot reach the server: ${e.message}`, true));
