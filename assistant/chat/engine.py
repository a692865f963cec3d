"""The chat engine: a conversation's turns in, a grounded answer out, the turn stored.

No web imports. Three steps, so that a streaming reply can start as soon as the request is
known to be good: ``prepare`` (check the turns, find or start the conversation, find or
analyse the study: every client error is raised here), ``compose`` (quote the analysis or
search the literature) and ``finish`` (store the user turn and the answer).

Conversation continuity, since OpenAI clients send the whole history every time: the id in
``metadata.conversation_id`` when the client sends one (created on first use); else the
id in the reference line ``(conversation <id>)`` that ends each of the assistant's replies,
found in the latest assistant message of the history; else a new conversation. The study a
question is about is the image attached to it, else the latest image in the history
(looked up by sha256 among the conversation's studies, so the model does not run again),
else the conversation's latest stored study.

Generation: answers are extractive. SmolLM2-135M-Instruct, the model that ships offline,
was measured wording answers from the passages they quote (``scripts/eval_chat_generation.py``)
and its sentences were seldom in the passages they cited; ``generation_status`` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from assistant.chat.compose import (
    ENGLISH_ONLY,
    HELP,
    REFUSAL,
    Citation,
    Composed,
    Topic,
    asks_code,
    aspect_variant,
    classify,
    follow_up,
    icd_wording,
    knowledge_answer,
    main_question,
    not_english,
    refusal,
    render,
    small_talk,
    source_number,
    study_answer,
    subject_named,
    with_source,
    with_study,
    without_greeting,
)
from assistant.chat.messages import ChatInputError, Image, Turn, last_user_turn
from assistant.chat.messages import referenced_conversation as referenced
from assistant.chat.store import ID_PATTERN, ConversationStore, StoredStudy, new_id
from assistant.chat.support import american
from assistant.config import Settings
from assistant.data.manifest import DataError
from assistant.imaging import ImageInputError
from assistant.pipeline import CITATION_QUERIES, Analysis, Pipeline, open_retrieval
from assistant.retrieval.index import IndexUnusableError
from assistant.retrieval.search import Hit, Searcher
from assistant.vision.infer import Diagnosis

log = logging.getLogger(__name__)

# What "it" is in an aspect question about a study, by the model's diagnosis (in scope).
DIAGNOSED = {"tumour": "brain tumor"}
SEARCH_DEPTH = 3  # hits searched per citation wanted (only those holding the terms are cited)
NO_STUDY = (f"{REFUSAL} There is no study in this conversation: attach the image (PNG, "
            "JPEG or DICOM) to your message as a data URL. To ask about a condition or "
            "term instead, name it in the question (each question is looked up on its own "
            "words).")


GENERATION_OFF = ("generated wording is off: SmolLM2-135M-Instruct's sentences were seldom in "
                  "the passages they cited (scripts/eval_chat_generation.py)")


def generation_status(settings: Settings) -> str:
    """Why answers are extractive (the start-up log says it)."""
    folder = settings.data_dir / "models" / "smollm2"
    if not any(folder.glob("*.gguf")):
        return f"extractive: {GENERATION_OFF}; no SmolLM2 GGUF file in {folder} either"
    return f"extractive: {GENERATION_OFF}"


@dataclass(frozen=True)
class Prepared:
    conversation_id: str
    question: str
    topic: Topic
    study: StoredStudy | None
    image_sha256: str | None  # of the image attached to this turn
    said: str = ""  # the turn's text as sent (``question`` is without a greeting before it)
    read_as: str | None = None  # the question with an earlier question's subject put in
    read_from: str = "the subject of an earlier question"  # where ``read_as``'s subject is from
    also_asked: tuple[str, ...] = ()  # the turn's questions after the one answered
    missing_source: int | None = None  # a source number the previous answer did not list


@dataclass(frozen=True)
class ChatAnswer:
    conversation_id: str
    composed: Composed
    text: str  # the whole reply: notice, answer, conversation reference

    @property
    def citations(self) -> tuple[Citation, ...]:
        return self.composed.citations


def chat_searcher(base: Searcher) -> Searcher:
    """The same index, embedder, ranking and re-ranker, with snippets chosen by term
    overlap: the sentences that hold the question's words (and about 1 ms instead of
    embedding every sentence)."""
    return Searcher(base.index, base.embedder, base.candidates, embed_snippets=False,
                    ranking=base.ranking, reranker=base.reranker)


def _merged(first: list[Hit], then: list[Hit]) -> list[Hit]:
    """``first``, then the hits of ``then`` it does not hold."""
    seen = {h.id for h in first}
    return first + [h for h in then if h.id not in seen]


class KeyedLocks:
    """One lock per key, kept only while a thread holds or waits for it: turns carrying the
    same image to the same conversation wait for each other (one study, one model run),
    and any others run at once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class ChatEngine:
    """Answers chat turns from the pipeline's analyses and the literature index."""

    def __init__(self, store: ConversationStore, pipeline: Pipeline | None,
                 searcher: Searcher | None = None, retrieval_note: str | None = None,
                 max_citations: int = 3, generation: str = "extractive",
                 search_lock: threading.Lock | None = None,
                 analyze: Callable[[bytes], Analysis] | None = None) -> None:
        """``analyze``: how an attached image is analysed (the service passes its
        micro-batcher, so the chat's images share the analyses' queue and cap); default:
        the pipeline's ``analyze``."""
        self.store = store
        self.pipeline = pipeline
        self.analyze = analyze
        # One study per image and conversation, even when turns carrying the same image
        # arrive at once: the look-up, the analysis and the store run under the lock of the
        # (conversation, image) pair; other pairs are not held up (a lock of one of 64
        # stripes, before, made two pairs on a stripe wait for each other's analysis).
        self._study_locks = KeyedLocks()
        self.searcher = chat_searcher(searcher) if searcher is not None else None
        self.retrieval_note = retrieval_note or (
            None if searcher else "literature retrieval was not configured")
        self.max_citations = max_citations
        self.generation = generation
        # The embedder's tokenizer is not thread-safe: share the lock of every other user
        # of the same searcher (the service's /v1/search).
        self.search_lock = search_lock or threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, pipeline: Pipeline | None = None
                      ) -> ChatEngine:
        """The store at ``settings.chat.db_path``; ``pipeline`` (shared) or the release one;
        the pipeline's literature searcher, else the built index if there is one."""
        pipeline = pipeline or Pipeline.from_settings(settings, citations=False)
        searcher, note = pipeline.searcher, pipeline.retrieval_note
        if searcher is None:
            searcher, note = open_retrieval(settings)
        assert settings.chat.db_path is not None  # Settings resolves it
        store = ConversationStore(settings.chat.db_path)
        return cls(store, pipeline, searcher, note, settings.chat.citations,
                   generation_status(settings))

    def warm_up(self) -> None:
        """Load the embedder and fill the pipeline's citation cache before the first
        request, so that no client waits for either."""
        start = time.perf_counter()
        if self.searcher is not None:
            with self.search_lock:
                self.searcher.search("brain tumor", k=1)
        if self.pipeline is not None and self.pipeline.searcher is not None:
            for label in CITATION_QUERIES:
                self.pipeline.citations(Diagnosis(True, None, label, None, 0.5, None))
        log.info("chat warmed up in %.2f s (%s)", time.perf_counter() - start, self.generation)

    # -- the three steps -------------------------------------------------------------------

    def prepare(self, turns: list[Turn], conversation_id: str | None = None,
                user: str | None = None) -> Prepared:
        """Check the request, find its conversation and study; client errors raise
        ``ChatInputError`` (or, for a bad image, the reader's ``ImageInputError``)."""
        turn = last_user_turn(turns)
        cid = self._conversation(turns, conversation_id, user)
        image_now = turn.images[0] if turn.images else None
        study = (self._study(cid, image_now) if image_now is not None
                 else self._history_study(cid, turns))
        question = without_greeting(turn.text.strip())  # "Hi, what is ...?"
        # "I have a question. What is X?": the question, when it is a knowledge question
        # (a study question keeps every sentence: "What is the probability? Where is it?")
        first, also = main_question(question)
        if first != question and classify(first, study is not None, image_now is not None
                                           ) == "knowledge":
            question = first
        else:
            also = ()
        read_as, read_from = None, Prepared.read_from
        missing_source = number = source_number(question)
        if number is not None:  # "What does reference 1 say?": that source, by its id
            read_as = next(filter(None, (with_source(question, answer) for answer
                                         in self._earlier_answers(cid, turns))), None)
            read_from = "a source of an earlier answer"
            missing_source = number if read_as is None else None
        elif study is None:  # with a study, "it" is the study
            earlier = ([t.text for t in turns[:-1] if t.role == "user" and t.text.strip()]
                       or [m.content for m in self.store.messages(cid) if m.role == "user"])
            read_as = follow_up(question, earlier)  # "What causes it?" after "What is X?"
        elif (subject := DIAGNOSED.get(study.analysis["diagnosis"].get("label"))) is not None:
            # "What causes it?" of a study the model reads as a tumour asks of brain tumours
            # (it had quoted the diagnosis); "Is it malignant?", "Where is it?" stay the
            # study's
            read_as = follow_up(question, [f"What is {subject}?"])
            if read_as is not None:
                read_from = "the study's diagnosis"
        question = read_as or question
        topic = classify(question, study is not None, image_now is not None)
        return Prepared(cid, question, topic, study, image_now.sha256 if image_now else None,
                        turn.text.strip(), read_as, read_from, also, missing_source)

    def compose(self, prepared: Prepared) -> Composed:
        composed = self._compose(prepared)
        if composed.kind == "refusal" and not_english(prepared.question):
            composed = replace(composed, body=f"{composed.body} {ENGLISH_ONLY}")
        return composed

    def _compose(self, prepared: Prepared) -> Composed:
        if small_talk(prepared.question) and prepared.image_sha256 is None:
            return refusal(HELP)
        if prepared.missing_source is not None:
            return refusal(f"{REFUSAL} No earlier answer in this conversation lists a "
                           f"source [{prepared.missing_source}].")
        if prepared.topic == "knowledge":
            composed = self._knowledge_or_code(prepared.question)
            if prepared.read_as is not None:
                composed = replace(composed, body=f"Read as \"{prepared.read_as}\" "
                                   f"({prepared.read_from}).\n{composed.body}")
            if prepared.also_asked:
                later = " ".join(f"\"{q}\"" for q in prepared.also_asked)
                composed = replace(composed, body=f"This answers \"{prepared.question}\"; "
                                   f"ask {later} in a message of its own.\n{composed.body}")
            if prepared.image_sha256 is not None and prepared.study is not None:
                composed = with_study(composed, prepared.study.id, prepared.study.analysis,
                                      prepared.question)
            return composed
        if prepared.study is None:
            return refusal(NO_STUDY)
        return study_answer(prepared.question, prepared.study.id, prepared.study.analysis)

    def finish(self, prepared: Prepared, composed: Composed) -> ChatAnswer:
        text = render(composed, prepared.conversation_id)
        asked = prepared.said or prepared.question
        if prepared.image_sha256:
            asked = f"{asked} [image sha256 {prepared.image_sha256}]".strip()
        study_id = prepared.study.id if prepared.study else None
        self.store.add_message(prepared.conversation_id, "user", asked, study_id)
        self.store.add_message(prepared.conversation_id, "assistant", text,
                               composed.study_id, composed.kind)
        log.info("conversation %s: %s answer, %d citation(s)", prepared.conversation_id,
                 composed.kind, len(composed.citations))
        return ChatAnswer(prepared.conversation_id, composed, text)

    def answer(self, turns: list[Turn], conversation_id: str | None = None,
               user: str | None = None) -> ChatAnswer:
        prepared = self.prepare(turns, conversation_id, user)
        return self.finish(prepared, self.compose(prepared))

    # -- parts -----------------------------------------------------------------------------

    def _conversation(self, turns: list[Turn], chosen: str | None, user: str | None) -> str:
        if chosen is not None:
            if not ID_PATTERN.fullmatch(chosen):
                raise ChatInputError("metadata.conversation_id must be 1-64 letters, digits, "
                                     "'-' or '_'", "metadata.conversation_id")
            if not self.store.ensure_conversation(chosen, user) and not self._owned(chosen, user):
                raise ChatInputError(f"conversation {chosen} not found",
                                     "metadata.conversation_id", "conversation_not_found", 404)
            return chosen
        found = referenced(turns)
        if found is not None and self.store.has_conversation(found) and self._owned(found, user):
            return found
        return self.store.create_conversation(user, new_id())

    def _owned(self, conversation_id: str, user: str | None) -> bool:
        """A conversation begun for a ``user`` is continued only for that user: a request
        that names no user (or another) cannot read it."""
        owner = self.store.conversation_user(conversation_id)
        return owner is None or owner == user

    def _earlier_answers(self, conversation_id: str, turns: list[Turn]) -> list[str]:
        """The assistant's replies, newest first: in the history the client sent, else as
        stored (a source number is of the latest answer that lists it)."""
        sent = [t.text for t in turns[:-1] if t.role == "assistant" and t.text.strip()]
        stored = sent or [m.content for m in self.store.messages(conversation_id)
                          if m.role == "assistant"]
        return stored[::-1]

    def _history_study(self, conversation_id: str, turns: list[Turn]) -> StoredStudy | None:
        """The study of the latest image in the history that could be read, else the
        conversation's latest stored study. An image refused when it was sent never
        became the conversation's study; clients resend it with every later turn, and it
        must not fail those turns."""
        for image in reversed([i for t in turns[:-1] if t.role == "user" for i in t.images]):
            try:
                return self._study(conversation_id, image)
            except ImageInputError as exc:
                log.info("conversation %s: an earlier image is skipped (%s)",
                         conversation_id, exc)
        return self.store.latest_study(conversation_id)

    def _study(self, conversation_id: str, image: Image | None) -> StoredStudy | None:
        if image is None:
            return self.store.latest_study(conversation_id)
        with self._study_locks.hold((conversation_id, image.sha256)):
            found = self.store.find_study(conversation_id, image.sha256)
            if found is not None:
                return found
            if self.analyze is None and self.pipeline is None:
                raise ChatInputError("image analysis is not available on this server",
                                     "messages", "analysis_unavailable", 503)
            analyze = self.analyze or self.pipeline.analyze  # type: ignore[union-attr]
            analysis = analyze(image.data)  # ImageInputError for a bad image
            return self.store.add_study(conversation_id, image.sha256, analysis.to_dict())

    def _knowledge_or_code(self, question: str) -> Composed:
        """``_knowledge``; a code asked for a tumour that cites none is asked again as
        ICD-10-CM words it ("What is the ICD-10 code for brain tumour?" found no code: the
        codes say "neoplasm of brain"), and that answer is given when it cites a code."""
        def cites_code(answer: Composed) -> bool:
            return any(c.doc_id.startswith("ICD10CM:") for c in answer.citations)

        composed = self._knowledge(question)
        worded = icd_wording(question) if asks_code(question) else None
        if worded is None or cites_code(composed):
            return composed
        coded = self._knowledge(worded)
        if not cites_code(coded):
            return composed
        return replace(coded, body=f"Read as \"{worded}\" (ICD-10-CM calls tumours "
                                   f"neoplasms).\n{coded.body}")

    def _knowledge(self, question: str) -> Composed:
        if self.searcher is None:
            return refusal(f"{REFUSAL} The literature is not available on this server "
                           f"({self.retrieval_note}).")
        try:
            k = SEARCH_DEPTH * self.max_citations
            # "What is oedema?" finds what "What is edema?" finds: the HPO's "Edema" and
            # ICD-10-CM write American English (its "oedema" papers came first before)
            query = american(question)
            # the HPO term or ICD-10-CM code titled as asked ("What is the code for
            # cerebral edema?": G93.6, which the search had ranked below the traumatic ones)
            subject = subject_named(query)
            own = self.searcher.index.passages.titled(subject) if subject else []
            with self.search_lock:
                hits = self.searcher.search(query, k=k, first=own)
                variant = aspect_variant(query)  # "signs of X": "symptoms of X" as well
                if variant is not None:
                    hits = _merged(hits, self.searcher.search(variant, k=k))
                if asks_code(question):  # the codes for it, then the rest
                    hits = _merged(self.searcher.search(query, k=k, sources=["icd10cm"],
                                                        first=own), hits)
        except ValueError:  # nothing searchable in the question
            hits = []
        except (IndexUnusableError, DataError, OSError) as exc:
            log.warning("literature search failed: %s", exc)
            return refusal(f"{REFUSAL} The literature search failed.")
        lexical = self.searcher.index.lexical
        return knowledge_answer(question, hits, self.max_citations,
                                lambda term: len(lexical.postings(term)))
