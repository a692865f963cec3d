// The clinicians' page: analyse an image with POST /v1/analyze, show the result, then chat
// about the same study through POST /v1/chat/completions (streamed). Text is only ever set
// with textContent, never parsed as HTML.
"use strict";

(() => {
  const MODEL = "medical-imaging-assistant";
  const HISTORY_SENT = 20; // earlier turns a question carries (the server keeps them all)
  const $ = (id) => document.getElementById(id);

  // The study being discussed: its image as a data URL, the conversation id the chat
  // stores it under, and the text turns so far (OpenAI clients send the whole history).
  let study = null;

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function showError(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  // The message of the service's JSON error body ({"error": {"message"}}), with the status.
  async function errorMessage(response) {
    let text = "";
    try {
      text = await response.text();
    } catch (_) {
      // no body
    }
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) {
        return `Error ${response.status}: ${body.error.message}`;
      }
    } catch (_) {
      // not JSON
    }
    const detail = text ? `: ${text.slice(0, 300)}` : "";
    return `Error ${response.status} ${response.statusText}${detail}`;
  }

  async function checkReadiness() {
    const element = $("readiness");
    try {
      const response = await fetch("/readyz", { cache: "no-store" });
      const body = await response.json();
      const parts = Object.entries(body.components || {}).map(([k, v]) => `${k}: ${v}`);
      element.textContent = `Service ${body.status}${parts.length ? ` (${parts.join(", ")})` : ""}`;
      element.classList.toggle("ready", body.status === "ready");
      if (body.status === "starting") setTimeout(checkReadiness, 2000);
    } catch (_) {
      element.textContent = "The service does not answer.";
    }
  }

  // -- the analysis ------------------------------------------------------------------------

  function setText(id, text) {
    $(id).textContent = text || "";
  }

  function renderDiagnosis(analysis) {
    const dx = analysis.diagnosis;
    const label = $("dx-label");
    label.textContent = dx.label || "not assessed";
    label.className = dx.label ? (dx.label === dx.positive_label ? "positive" : "negative") : "";
    setText("dx-probability", dx.probability === null || dx.probability === undefined
      ? "not computed" : `${dx.probability.toFixed(3)} (${dx.positive_label})`);
    setText("dx-threshold", dx.threshold === null || dx.threshold === undefined
      ? "not applied" : dx.threshold.toFixed(2));
    setText("dx-scope", analysis.in_scope ? "yes"
      : `no: ${analysis.scope_reason || "outside what the model was trained on"}`);
  }

  function renderHeatmap(analysis) {
    const image = $("heatmap");
    const heat = analysis.heatmap;
    if (heat && heat.png_base64) {
      image.src = `data:image/png;base64,${heat.png_base64}`;
      image.hidden = false;
      const where = heat.location && heat.location.phrase ? `; hottest area ${heat.location.phrase}` : "";
      setText("heatmap-caption", `Attention heatmap (${heat.method})${where}.`);
    } else {
      image.removeAttribute("src");
      image.hidden = true;
      setText("heatmap-caption", `No heatmap: ${analysis.scope_reason || "none was computed"}.`);
    }
  }

  function renderReport(report) {
    setText("report-findings", report.findings);
    setText("report-impression", report.impression);
    setText("report-limitations", report.limitations);
    const d = report.drafter || {};
    setText("report-drafter", `Drafted by ${d.name || "?"} ${d.version || ""} from the outputs of ${d.model || "?"}.`);
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  function renderCitations(analysis) {
    const list = $("citations");
    list.replaceChildren();
    for (const c of analysis.citations || []) {
      const item = document.createElement("li");
      const url = safeUrl(c.url);
      const title = document.createElement(url ? "a" : "span");
      title.textContent = c.citation || c.title || c.id;
      if (url) {
        title.href = url;
        title.target = "_blank";
        title.rel = "noopener noreferrer";
      }
      item.append(title);
      if (c.snippet) {
        const quote = document.createElement("blockquote");
        quote.textContent = c.snippet;
        item.append(quote);
      }
      list.append(item);
    }
    const note = $("citations-note");
    const none = !analysis.citations || analysis.citations.length === 0;
    note.textContent = none ? `No citations: ${analysis.citations_note || "none retrieved"}.` : "";
    note.hidden = !none;
  }

  function render(analysis) {
    setText("study-id", `study ${analysis.study_id}`);
    setText("notice", analysis.notice);
    renderHeatmap(analysis);
    renderDiagnosis(analysis);
    renderReport(analysis.report);
    renderCitations(analysis);
    $("result").hidden = false;
  }

  async function analyze(event) {
    event.preventDefault();
    const error = $("analyze-error");
    const status = $("analyze-status");
    showError(error, "");
    const file = $("file").files[0];
    if (!file) {
      showError(error, "Choose an image file (PNG, JPEG or DICOM) first.");
      $("file").focus();
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    for (const name of ["indication", "age", "sex"]) {
      const value = $(name).value.trim();
      if (value) form.append(name, value);
    }
    $("result").hidden = true;
    $("chat").hidden = true;
    $("analyze-button").disabled = true;
    status.textContent = `Analysing ${file.name}…`;
    try {
      const response = await fetch("/v1/analyze", { method: "POST", body: form, headers: authHeaders() });
      if (!response.ok) {
        status.textContent = "";
        showError(error, await errorMessage(response));
        return;
      }
      const analysis = await response.json();
      render(analysis);
      await startConversation(file);
      status.textContent = `Analysed ${file.name}.`;
    } catch (err) {
      status.textContent = "";
      showError(error, `The request failed: ${err.message}`);
    } finally {
      const button = $("analyze-button");
      button.disabled = false;
      // disabling it dropped the keyboard focus to the page: give it back
      if (document.activeElement === document.body) button.focus();
    }
  }

  // -- the chat ----------------------------------------------------------------------------

  function newConversationId() {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return `page-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  // The media type from the bytes (the browser's guess from the file name may be empty).
  function mediaType(bytes) {
    if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return "image/png";
    if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "image/jpeg";
    return "application/dicom";
  }

  async function startConversation(file) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const blob = new Blob([bytes], { type: mediaType(bytes) });
    const dataUrl = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
    if (study && study.pending) study.pending.abort(); // its answer belongs to no one now
    study = { dataUrl, conversationId: newConversationId(), history: [], pending: null };
    $("chat-log").replaceChildren();
    $("chat-log").removeAttribute("aria-busy");
    $("chat-button").disabled = false;
    showError($("chat-error"), "");
    $("chat").hidden = false;
  }

  function addBubble(role, text) {
    const item = document.createElement("li");
    item.className = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant (draft)";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(who, body);
    $("chat-log").append(item);
    return item;
  }

  // Server-sent events of a streamed completion -> the answer's text, shown as it comes.
  async function readStream(response, onText) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return text;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
          if (delta && delta.content) {
            text += delta.content;
            onText(text);
          }
        }
      }
    }
  }

  async function ask(event) {
    event.preventDefault();
    const error = $("chat-error");
    const input = $("chat-input");
    const question = input.value.trim();
    // The study this question is about: a new analysis replaces the global one while
    // the answer streams, and this answer must not land in the new study's conversation.
    const current = study;
    if (current && current.pending) return; // one question at a time (Enter twice)
    showError(error, "");
    if (!current) {
      showError(error, "Analyse an image first.");
      return;
    }
    if (!question) {
      showError(error, "Type a question first.");
      input.focus();
      return;
    }
    // The image goes with the first question only; follow-ups name the conversation,
    // which keeps the study (and the server keeps its history: the last turns suffice).
    const first = current.history.length === 0;
    const content = first
      ? [{ type: "text", text: question }, { type: "image_url", image_url: { url: current.dataUrl } }]
      : question;
    const messages = [...current.history.slice(-HISTORY_SENT), { role: "user", content }];
    const asked = addBubble("user", question);
    const answer = addBubble("assistant", "…");
    const answerText = answer.querySelector(".text");
    const log = $("chat-log");
    current.pending = new AbortController();
    $("chat-button").disabled = true;
    log.setAttribute("aria-busy", "true"); // announced once, when the answer is whole
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify({
          model: MODEL, stream: true, messages,
          metadata: { conversation_id: current.conversationId },
        }),
        signal: current.pending.signal,
      });
      if (response.status === 413 && first) {
        throw new Error("Error 413: the image is too large to attach to the chat (it travels " +
                        "base64-encoded, a third larger than the file, within the service's " +
                        "request limit); the analysis above stands.");
      }
      if (!response.ok) throw new Error(await errorMessage(response));
      const text = await readStream(response, (sofar) => {
        answerText.textContent = sofar;
        log.scrollTop = log.scrollHeight;
      });
      current.history.push({ role: "user", content: question }, { role: "assistant", content: text });
      if (current === study) input.value = "";
    } catch (err) {
      asked.remove();
      answer.remove();
      if (current === study) {
        showError(error, err.message.startsWith("Error ") ? err.message : `The chat failed: ${err.message}`);
      }
    } finally {
      current.pending = null;
      if (current === study) {
        log.removeAttribute("aria-busy");
        $("chat-button").disabled = false;
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("analyze-form").addEventListener("submit", analyze);
    $("chat-form").addEventListener("submit", ask);
    $("chat-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        $("chat-form").requestSubmit();
      }
    });
    checkReadiness();
  });
})();
