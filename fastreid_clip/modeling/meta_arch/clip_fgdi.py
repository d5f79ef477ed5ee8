"""CLIP-FGDI (Zhao, Qi, Geng, "CILP-FGDI: Exploiting Vision-Language Model for Generalizable Person
Re-Identification", IEEE TIFS 2025, arXiv 2501.16065): multi-source domain generalisation with a three-stage
strategy, a gradient-reversed domain classifier on the ID prompts, domain prompts and the apn loss."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from ...config.clip_fgdi import FGDI_STAGES, check_fgdi_config, check_nominal_classes, check_nominal_covers
from ...config.validate import ConfigValueError
from ...utils.distributed import all_gather_cat
from ..backbones import build_clip_towers
from ..heads.domain import DomainClassifier
from ..losses import cross_entropy_label_smooth
from ..losses.apn import APN_MODES, apn_loss
from ..prompts import DomainPromptLearner, IDPromptLearner
from .clip_baseline import ClipBaseline
from .clip_reid import ClipReID

__all__ = ["ClipFGDI"]

PRIOR, ID_PROMPT, DOMAIN_PROMPT, IMAGE = FGDI_STAGES
DOMAIN_FIELD = "domains"


@META_ARCH_REGISTRY.register()
class ClipFGDI(ClipReID):
    """CLIP-FGDI: :class:`ClipReID`'s image encoder, heads, text encoder and ID prompts, plus one domain token per
    source (:class:`DomainPromptLearner`), an adversarial domain classifier behind a gradient reversal layer
    (``domain_head``) and a monitor classifier (``monitor_head``). Training batches carry ``"domains"``, each
    image's source index (:meth:`train_sample_fields`).

    Stages (paper §III-B; ../shared/notes/methods.md §4.2):

    * ``prior`` (paper stage 1, 3 epochs): the image encoder with the baseline losses only (ID on both heads +
      triplet; the FGDI configs use the soft margin), no text.
    * ``id_prompt`` (stage 2, ID tokens, on cached ``f_proj``): ``L_i2t + L_t2i + alpha * CE(domain_head(GRL(t)), d)``
      (Eq. 6-7), ``t`` the ID-prompt text feature of each sample; the GRL reverses (x ``-GRL_STRENGTH``) the gradient
      that reaches the ID tokens, so they learn to hide the domain while the head learns to find it.
    * ``domain_prompt`` (stage 2, domain tokens): ``t_d`` = text feature of "A photo of a X X X X person from D
      dataset." (own identity's tokens detached, own source's domain token);
      ``L = SupCon(V -> t_d) + SupCon(t_d -> V) + monitor_weight * CE(monitor_head(t_d.detach()), d)``.
    * ``image`` (stage 3): ``L_id + L_tri + (1 - beta) L_i2tce + beta L_apn`` (Eq. 9) with anchor ``f_proj``,
      positive ``T[y]`` (ID-prompt bank) and negative ``T_dom[y]`` (domain-prompt bank, each identity with its own
      source's token); both banks are computed once at the stage start (frozen prompts: notes §8.3). ``apn_mode``
      selects the Tab. VIII variant (:data:`~fastreid_clip.modeling.losses.apn.APN_MODES`); ``apnce`` replaces
      both text terms by ``L_apnCE`` (Eq. 13).

    Inference is the baseline's (the FGDI configs: ``concat[f, f_proj]`` before BN, not normalised).

    Args:
        domain_prompt: the domain prompt learner (its ``num_domains`` = number of sources).
        domain_head: adversarial classifier (with a GRL) on ID-prompt text features.
        monitor_head: classifier on detached domain-prompt text features.
        domain_weight: ``alpha`` (0.01).
        monitor_weight: weight of the monitor CE (0.01).
        beta: Eq. 9's ``beta`` (0.1, reference; paper 0.3).
        apn_mode, apn_margin: ``MODEL.FGDI.APN.{MODE,MARGIN}``.
        nominal_classes: ``MODEL.FGDI.NOMINAL_CLASSES``, classes per source (``()`` = the training identities).
            With it the model has ``sum(nominal_classes)`` classes: the training identities first (labels
            ``0..N-1``), then each source's unused classes in source order, in that source's domain
            (:meth:`on_train_set`).
        **clip_reid: :class:`ClipReID` arguments.
    """

    @configurable
    def __init__(self, *, domain_prompt: DomainPromptLearner, domain_head: DomainClassifier,
                 monitor_head: DomainClassifier, domain_weight: float = 0.01, monitor_weight: float = 0.01,
                 beta: float = 0.1, apn_mode: str = "code_cs_softplus", apn_margin: float = 0.3,
                 nominal_classes: Sequence[int] = (), **clip_reid):
        super().__init__(**clip_reid)
        if apn_mode not in APN_MODES:
            raise ConfigValueError("MODEL.FGDI.APN.MODE", apn_mode, f"one of {list(APN_MODES)}")
        if not 0 <= beta <= 1:
            raise ConfigValueError("MODEL.FGDI.BETA", beta, "beta in [0, 1] of Eq. 9")
        domain_prompt.check_compatible(self.prompt_learner)
        for name, head in (("domain_head", domain_head), ("monitor_head", monitor_head)):
            if head.num_domains != domain_prompt.num_domains:
                raise ValueError(f"{name} classifies {head.num_domains} domains, the domain prompt has "
                                 f"{domain_prompt.num_domains}")
        self.domain_prompt = domain_prompt
        self.domain_head = domain_head
        self.monitor_head = monitor_head
        self.domain_weight = float(domain_weight)
        self.monitor_weight = float(monitor_weight)
        self.beta = float(beta)
        self.apn_mode = apn_mode
        self.apn_margin = float(apn_margin)
        self.nominal_classes = tuple(int(n) for n in nominal_classes)
        if self.nominal_classes and sum(self.nominal_classes) != self.prompt_learner.num_ids:
            raise ConfigValueError("MODEL.HEADS.NUM_CLASSES", self.prompt_learner.num_ids,
                                   f"sum(MODEL.FGDI.NOMINAL_CLASSES) = {sum(self.nominal_classes)} "
                                   f"{self.nominal_classes}", "Leave MODEL.HEADS.NUM_CLASSES 0: the trainer sets it")
        if self.nominal_classes and len(self.nominal_classes) != domain_prompt.num_domains:
            raise ValueError(f"{len(self.nominal_classes)} nominal class counts for "
                             f"{domain_prompt.num_domains} domains")
        # Source domain of every identity, from the training set (on_train_set); -1 = unknown.
        self.register_buffer("identity_domains", torch.full((self.prompt_learner.num_ids,), -1, dtype=torch.long),
                             persistent=False)
        self.register_buffer("domain_bank", torch.empty(0), persistent=False)
        self.stage = IMAGE

    @classmethod
    def check_config(cls, cfg) -> None:
        """Checks ``MODEL.FGDI.*`` and the stage names (``validate_train_config`` calls it before any data)."""
        check_fgdi_config(cfg)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        check_fgdi_config(cfg)
        f, prompt = cfg.MODEL.FGDI, cfg.MODEL.PROMPT
        num_domains = f.NUM_DOMAINS or len(cfg.DATASETS.NAMES)
        towers = build_clip_towers(cfg)
        text = towers.text
        id_prompt = IDPromptLearner(cfg.MODEL.HEADS.NUM_CLASSES, text.token_embedding, text.tokenize, prompt.N_CTX,
                                    prompt.CLASS_WORD, prompt.INIT_STD)
        domain_prompt = DomainPromptLearner(num_domains, text.token_embedding, text.tokenize, prompt.N_CTX,
                                            prompt.CLASS_WORD, f.DOMAIN_PROMPT.N_CTX, f.DOMAIN_PROMPT.INIT_STD)
        text.token_embedding = None  # the prompt learners hold the embedded template rows
        width = text.output_dim
        return {
            **cls.baseline_args(cfg, towers.image),
            "text_encoder": text,
            "prompt_learner": id_prompt,
            "i2t_weight": cfg.MODEL.LOSSES.I2T.SCALE,
            "i2t_epsilon": cfg.MODEL.LOSSES.I2T.EPSILON,
            "supcon_temperature": cfg.MODEL.LOSSES.SUPCON.TEMPERATURE,
            "truncate_at_eot": prompt.TRUNCATE_AT_EOT,
            "domain_prompt": domain_prompt,
            "domain_head": DomainClassifier(width, num_domains, f.DOMAIN_HEAD.HIDDEN_DIM, grl_strength=f.GRL_STRENGTH),
            "monitor_head": DomainClassifier(width, num_domains, f.DOMAIN_HEAD.HIDDEN_DIM),
            "domain_weight": f.DOMAIN_LOSS_SCALE,
            "monitor_weight": f.MONITOR_LOSS_SCALE,
            "beta": f.BETA,
            "apn_mode": f.APN.MODE,
            "apn_margin": f.APN.MARGIN,
            "nominal_classes": tuple(f.NOMINAL_CLASSES),
        }

    @classmethod
    def num_train_classes(cls, cfg, train_set) -> int:
        """The classifier size ``ClipTrainer.auto_scale_for_dataset`` uses when ``MODEL.HEADS.NUM_CLASSES`` is 0:
        ``sum(MODEL.FGDI.NOMINAL_CLASSES)``, checked against each source's training identities (an entry below its
        source's count is a :class:`ConfigValueError` naming the key, the source and both numbers), or the number
        of training identities when the key is ``()``."""
        counts = cls.train_ids_per_source(train_set, len(cfg.DATASETS.NAMES))
        nominal = check_nominal_classes(cfg, counts)
        return sum(nominal) if nominal else train_set.num_classes

    @staticmethod
    def train_ids_per_source(train_set, num_sources: int) -> List[int]:
        """Number of distinct training identities of each source (from the items' ``"domains"`` field)."""
        domains = getattr(train_set, "sample_fields", {}).get(DOMAIN_FIELD)
        if domains is None:
            raise ValueError("ClipFGDI trains on a set whose items carry 'domains' (ClipFGDI.train_sample_fields)")
        pids = [set() for _ in range(num_sources)]
        for item, domain in zip(train_set.img_items, torch.as_tensor(domains).tolist()):
            if not 0 <= domain < num_sources:
                raise ValueError(f"training item '{item[0]}' has domain {domain}, not in [0, {num_sources})")
            pids[domain].add(item[1])
        return [len(p) for p in pids]

    # ------------------------------------------------------------------ data
    @classmethod
    def train_sample_fields(cls, cfg, img_items: List[tuple], sources: Sequence[int]) -> Dict[str, torch.Tensor]:
        """``{"domains": [N] long}``: each training item's source, its dataset's index in ``DATASETS.NAMES``."""
        if len(sources) != len(img_items):
            raise ValueError(f"{len(sources)} source indices for {len(img_items)} training items")
        return {DOMAIN_FIELD: torch.as_tensor(list(sources), dtype=torch.long)}

    def on_train_set(self, train_set) -> None:
        """Record every identity's source domain (``ClipTrainer`` calls it once with the training set).

        With ``nominal_classes`` the unused classes ``N..C-1`` (``N`` training identities, ``C`` =
        ``sum(nominal_classes)``) get their source's domain: source 0's ``nominal_classes[0] - ids_0`` first, then
        source 1's, and so on (:meth:`nominal_class_domains`)."""
        domains = getattr(train_set, "sample_fields", {}).get(DOMAIN_FIELD)
        if domains is None:
            raise ValueError("ClipFGDI trains on a set whose items carry 'domains' (ClipFGDI.train_sample_fields)")
        labels = torch.as_tensor([train_set.pid_dict[item[1]] for item in train_set.img_items], dtype=torch.long)
        domains = torch.as_tensor(domains, dtype=torch.long)
        if self.nominal_classes:
            counts = self.train_ids_per_source(train_set, len(self.nominal_classes))
            extra = self.nominal_class_domains(counts, self.nominal_classes)
            num_real = len(train_set.pid_dict)
            if num_real + len(extra) != self.prompt_learner.num_ids:
                raise ValueError(f"{num_real} training identities + {len(extra)} unused nominal classes != the "
                                 f"model's {self.prompt_learner.num_ids} classes")
            labels = torch.cat([labels, torch.arange(num_real, num_real + len(extra))])
            domains = torch.cat([domains, extra])
        self.set_identity_domains(labels, domains)

    @staticmethod
    def nominal_class_domains(train_ids_per_source: Sequence[int], nominal_classes: Sequence[int]) -> torch.Tensor:
        """Domains of the unused classes appended after the training identities, in order: ``nominal_classes[k] -
        train_ids_per_source[k]`` times ``k`` for every source ``k`` (a count above its nominal is an error)."""
        check_nominal_covers(nominal_classes, train_ids_per_source)
        extra = [k for k, (have, want) in enumerate(zip(train_ids_per_source, nominal_classes))
                 for _ in range(want - have)]
        return torch.as_tensor(extra, dtype=torch.long)

    def set_identity_domains(self, labels: torch.Tensor, domains: torch.Tensor) -> None:
        """Identity -> domain from per-image ``labels`` and ``domains`` (every identity must have one domain)."""
        num_ids, num_domains = self.prompt_learner.num_ids, self.domain_prompt.num_domains
        if labels.numel() and (int(labels.max()) >= num_ids or int(domains.max()) >= num_domains
                               or int(domains.min()) < 0):
            raise ValueError(f"identity labels must be < {num_ids} and domains in [0, {num_domains})")
        table = torch.full((num_ids,), -1, dtype=torch.long)
        table[labels] = domains
        if not torch.equal(table[labels], domains):
            bad = int(labels[table[labels] != domains][0])
            raise ValueError(f"identity {bad} appears in several source domains: CLIP-FGDI needs identities that are "
                             f"distinct across DATASETS.NAMES")
        self.identity_domains = table.to(self.device)

    # ------------------------------------------------------------------ stages
    def set_stage(self, name: str) -> None:
        if name not in FGDI_STAGES:
            raise ValueError(f"ClipFGDI has stages {FGDI_STAGES}, not '{name}' (STAGES.NAMES)")
        self.stage = name

    def on_stage_start(self, name: str) -> None:
        if name == IMAGE:
            self.text_bank = self.compute_text_bank()
            self.domain_bank = self.compute_domain_bank() if self._needs_domain_bank() else torch.empty(0)

    def _needs_domain_bank(self) -> bool:
        return self.apn_mode == "apnce" or self.beta > 0

    def encode_domain_prompts(self, labels: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """``[B, E]`` text features of the domain prompts of (identity, domain) pairs (ID rows detached)."""
        ctx = self.prompt_learner.ctx[labels]
        embeddings, eot = self.domain_prompt(ctx, domains, full_context=not self.truncate_at_eot)
        return self.text_encoder.encode_embeddings(embeddings, eot, truncate=self.truncate_at_eot,
                                                   max_eot=self.domain_prompt.eot_index)

    @torch.no_grad()
    def compute_domain_bank(self, chunk: int = 64) -> torch.Tensor:
        """``[C, E]`` domain-prompt features of every identity with its own source's token (fixed in ``image``)."""
        if bool((self.identity_domains < 0).any()):
            missing = int((self.identity_domains < 0).sum())
            raise RuntimeError(f"{missing} identities have no known source domain: call on_train_set(train_set) or "
                               f"set_identity_domains(labels, domains) before the image stage")
        labels = torch.arange(self.prompt_learner.num_ids, device=self.device)
        return torch.cat([self.encode_domain_prompts(labels[i:i + chunk], self.identity_domains[i:i + chunk]).float()
                          for i in range(0, len(labels), chunk)])

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: Dict):
        if self.training and self.stage in (ID_PROMPT, DOMAIN_PROMPT):
            feats = batched_inputs["features"].to(self.device)
            targets = batched_inputs["targets"].to(self.device, non_blocking=True)
            domains = self._batch_domains(batched_inputs)
            if self.stage == ID_PROMPT:
                return self.id_prompt_losses(feats, targets, domains)
            return self.domain_prompt_losses(feats, targets, domains)
        return ClipBaseline.forward(self, batched_inputs)

    def _batch_domains(self, batched_inputs: Dict) -> torch.Tensor:
        domains = batched_inputs.get(DOMAIN_FIELD)
        if domains is None:
            raise ValueError(f"ClipFGDI's stage '{self.stage}' needs each sample's source domain, batch key "
                             f"'{DOMAIN_FIELD}' (ClipFGDI.train_sample_fields)")
        return torch.as_tensor(domains).to(self.device, non_blocking=True).long()

    def id_prompt_losses(self, image_feats: torch.Tensor, targets: torch.Tensor,
                         domains: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Eq. 7: CLIP-ReID's ``L_i2t + L_t2i`` plus ``alpha * L_domain`` of the GRL'd per-sample ID-prompt
        features (each identity encoded once per minibatch). Under DDP both terms see the global minibatch: the
        domain classifier (whose BatchNorm needs the whole batch's statistics) gets the gathered text features
        (differentiably) and domains, so an N-process run computes the single-process loss."""
        unique, inverse = targets.unique(return_inverse=True)
        texts = self.encode_prompts(unique)[inverse]
        losses = self.supcon_prompt_losses(image_feats, texts, targets)
        if self.domain_weight:
            logits = self.domain_head(all_gather_cat(texts, differentiable=True))
            losses["loss_domain"] = self.domain_weight * F.cross_entropy(logits, all_gather_cat(domains))
        return losses

    def domain_prompt_losses(self, image_feats: torch.Tensor, targets: torch.Tensor,
                             domains: torch.Tensor) -> Dict[str, torch.Tensor]:
        """SupCon both ways between the images and their domain prompts, plus the monitor CE (detached input; over
        the global minibatch under DDP, as the domain classifier of :meth:`id_prompt_losses`)."""
        unique, inverse = targets.unique(return_inverse=True)
        unique_domains = torch.empty_like(unique).scatter_(0, inverse, domains)
        texts = self.encode_domain_prompts(unique, unique_domains)[inverse]
        losses = self.supcon_prompt_losses(image_feats, texts, targets)
        losses = {"loss_i2t_domain": losses["loss_i2t"], "loss_t2i_domain": losses["loss_t2i"]}
        if self.monitor_weight:
            logits = self.monitor_head(all_gather_cat(texts.detach()))
            losses["loss_monitor"] = self.monitor_weight * F.cross_entropy(logits, all_gather_cat(domains))
        return losses

    def losses(self, feats, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Stage ``prior``: the baseline's losses. Stage ``image``: Eq. 9 (or ``L_apnCE`` for ``apnce``)."""
        losses = ClipBaseline.losses(self, feats, targets)
        if self.stage == PRIOR:
            return losses
        if self.text_bank.numel() == 0 or (self._needs_domain_bank() and self.domain_bank.numel() == 0):
            raise RuntimeError("the image stage needs the prompt banks: call on_stage_start('image') first")
        anchors = feats.proj.float()
        if self.apn_mode == "apnce":
            losses["loss_apnce"] = self.i2t_weight * apn_loss("apnce", anchors, targets, None, None,
                                                              self.text_bank, self.domain_bank,
                                                              epsilon=self.i2t_epsilon)
            return losses
        if self.i2t_weight and self.beta < 1:
            logits = anchors @ self.text_bank.t()
            losses["loss_i2tce"] = (1 - self.beta) * self.i2t_weight * cross_entropy_label_smooth(
                logits, targets, self.i2t_epsilon)
        if self.beta > 0:
            losses["loss_apn"] = self.beta * apn_loss(self.apn_mode, anchors, targets, self.text_bank[targets],
                                                      self.domain_bank[targets], None, self.domain_bank,
                                                      margin=self.apn_margin)
        return losses
