"""In-domain figures of clips, from the networks of in_domain.py (DESIGN.md, Evaluation).

emotion accuracy  argmax of `EmotionNet` on a clip vs the requested emotion.
identity top-1    a clip's embedding (normalised mean of its frame embeddings) is compared by
                  cosine similarity with a gallery of real clips of every test subject (one
                  clip from the middle of each video, any label); correct if the nearest
                  gallery clip is of the same subject. The query's own reference video is left
                  out of the gallery, for generated and real queries alike, so a real clip
                  cannot match itself. Under 'unseen' the network never trained on these
                  identities: it is the embedding, not the classifier, that is used.
ACD-identity      ACD (acd.py) of the per-frame identity embeddings.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vice_gan.datasets import input_pipeline, splits
from vice_gan.evaluation import acd, fer, in_domain


def gallery_clips(
    table: input_pipeline.VideoTable, split: splits.Split, video_length: int, frame_stride: int
) -> dict[str, np.ndarray]:
    """One real clip from the middle of every video (any label, neutral included) of every test
    subject that is long enough.

    Returns:
      'clips' float32 [G, T, 64, 64, 3] in [-1, 1], 'subject' int32 [G], 'video' int32 [G]
      (row of `table`).
    """
    span = input_pipeline.clip_span(video_length, frame_stride)
    videos = np.flatnonzero(
        np.isin(table.subject, split.test_subjects) & (table.num_frames >= span)
    ).astype(np.int32)
    first = table.offsets[videos] + (table.num_frames[videos] - span) // 2
    clips = (
        np.stack(
            [input_pipeline.to_unit_range(table.pixels[f : f + span : frame_stride]) for f in first]
        )
        if len(videos)
        else np.zeros((0, video_length) + input_pipeline.FRAME_SHAPE, np.float32)
    )
    return {"clips": clips, "subject": table.subject[videos], "video": videos}


def identity_top1(
    query_emb: np.ndarray,
    query_subject: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_subject: np.ndarray,
    gallery_video: np.ndarray | None = None,
    exclude_video: np.ndarray | None = None,
) -> np.ndarray:
    """Top-1 identity retrieval by cosine similarity.

    Args:
      query_emb: [Q, D] embeddings; gallery_emb: [G, D] (both normalised inside).
      query_subject: int [Q]; gallery_subject: int [G].
      gallery_video, exclude_video: optional int [G] and [Q]: gallery entries whose video
        equals the query's `exclude_video` are left out for that query.

    Returns:
      bool [Q]: the nearest remaining gallery entry is of the query's subject.
    """
    sim = (
        in_domain.normalise(np.asarray(query_emb, np.float32))
        @ in_domain.normalise(np.asarray(gallery_emb, np.float32)).T
    )
    if exclude_video is not None:
        mask = np.asarray(gallery_video)[None, :] == np.asarray(exclude_video)[:, None]
        sim = np.where(mask, -np.inf, sim)
    nearest = np.argmax(sim, axis=1)
    return np.asarray(gallery_subject)[nearest] == np.asarray(query_subject)


def score_clips(
    nets: in_domain.InDomainNets,
    clips: np.ndarray,
    target_labels: np.ndarray,
    subjects: np.ndarray,
    reference_videos: np.ndarray,
    gallery: dict[str, np.ndarray],
    gallery_emb: np.ndarray | None = None,
) -> dict:
    """In-domain figures of a set of clips (generated or real).

    Args:
      clips: [B, T, 64, 64, 3] in [-1, 1]; target_labels: int [B] requested emotions (0-5);
      subjects: int [B] whose identity each clip should show; reference_videos: int [B] the
      table row of each clip's real reference (left out of the gallery).
      gallery: from `gallery_clips`; gallery_emb: its `clip_embeddings` if already computed.

    Returns:
      'emotion' (fer.cas_m-style dict: accuracy, per-emotion accuracy and counts),
      'identity_top1' float, 'acd_identity' float32 [B].
    """
    pred = nets.emotion_logits(clips).argmax(-1)
    frames = nets.frame_embeddings(clips)
    if gallery_emb is None:
        gallery_emb = nets.clip_embeddings(gallery["clips"])
    hits = identity_top1(
        in_domain.normalise(frames.mean(axis=1)),
        subjects,
        gallery_emb,
        gallery["subject"],
        gallery["video"],
        reference_videos,
    )
    return {
        "emotion": fer.cas_m(pred, target_labels),
        "identity_top1": float(hits.mean()),
        "acd_identity": np.asarray(acd.acd(jnp.asarray(frames))),
    }
