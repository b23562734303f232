"""The font families the typed digits are set in: data, in one place.

Each family names the Debian package that ships it and its font files (regular first, then
weights and slants where the package has them). `python -m evaluation.fonts missing` prints the
packages of families whose files are not on this machine (`make evaluate` installs them);
`python -m evaluation.fonts list` prints the table.

Categories group families in the results: "sans", "serif", "mono", "hand" (handwriting-like,
informal) and "script" (connected or calligraphic).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_TT = "/usr/share/fonts/truetype"
_OT = "/usr/share/fonts/opentype"
_URW = f"{_OT}/urw-base35"


@dataclass(frozen=True)
class FontFamily:
    name: str
    package: str                 # the Debian package that ships it
    category: str                # sans, serif, mono, hand, script
    files: tuple[str, ...]       # regular first

    def available(self) -> tuple[str, ...]:
        return tuple(f for f in self.files if Path(f).is_file())


def _f(name, package, category, *files) -> FontFamily:
    return FontFamily(name, package, category, tuple(files))


FAMILIES: tuple[FontFamily, ...] = (
    # DejaVu (fonts-dejavu-core)
    _f("DejaVu Sans", "fonts-dejavu-core", "sans", f"{_TT}/dejavu/DejaVuSans.ttf",
       f"{_TT}/dejavu/DejaVuSans-Bold.ttf", f"{_TT}/dejavu/DejaVuSans-Oblique.ttf"),
    _f("DejaVu Serif", "fonts-dejavu-core", "serif", f"{_TT}/dejavu/DejaVuSerif.ttf",
       f"{_TT}/dejavu/DejaVuSerif-Bold.ttf"),
    _f("DejaVu Sans Mono", "fonts-dejavu-core", "mono", f"{_TT}/dejavu/DejaVuSansMono.ttf",
       f"{_TT}/dejavu/DejaVuSansMono-Bold.ttf"),
    # Liberation (metric-compatible with Arial, Times New Roman, Courier New)
    _f("Liberation Sans", "fonts-liberation", "sans", f"{_TT}/liberation/LiberationSans-Regular.ttf",
       f"{_TT}/liberation/LiberationSans-Bold.ttf", f"{_TT}/liberation/LiberationSans-Italic.ttf"),
    _f("Liberation Serif", "fonts-liberation", "serif", f"{_TT}/liberation/LiberationSerif-Regular.ttf",
       f"{_TT}/liberation/LiberationSerif-Bold.ttf", f"{_TT}/liberation/LiberationSerif-Italic.ttf"),
    _f("Liberation Mono", "fonts-liberation", "mono", f"{_TT}/liberation/LiberationMono-Regular.ttf",
       f"{_TT}/liberation/LiberationMono-Bold.ttf"),
    # URW base35 (the PostScript 35: Helvetica, Times, Courier, Bookman, Avant Garde, Palatino, ...)
    _f("Nimbus Sans", "fonts-urw-base35", "sans", f"{_URW}/NimbusSans-Regular.otf",
       f"{_URW}/NimbusSans-Bold.otf", f"{_URW}/NimbusSans-Italic.otf"),
    _f("Nimbus Sans Narrow", "fonts-urw-base35", "sans", f"{_URW}/NimbusSansNarrow-Regular.otf",
       f"{_URW}/NimbusSansNarrow-Bold.otf"),
    _f("Nimbus Roman", "fonts-urw-base35", "serif", f"{_URW}/NimbusRoman-Regular.otf",
       f"{_URW}/NimbusRoman-Bold.otf", f"{_URW}/NimbusRoman-Italic.otf"),
    _f("Nimbus Mono PS", "fonts-urw-base35", "mono", f"{_URW}/NimbusMonoPS-Regular.otf",
       f"{_URW}/NimbusMonoPS-Bold.otf"),
    _f("URW Bookman", "fonts-urw-base35", "serif", f"{_URW}/URWBookman-Light.otf",
       f"{_URW}/URWBookman-Demi.otf", f"{_URW}/URWBookman-LightItalic.otf"),
    _f("URW Gothic", "fonts-urw-base35", "sans", f"{_URW}/URWGothic-Book.otf", f"{_URW}/URWGothic-Demi.otf"),
    _f("P052 (Palladio)", "fonts-urw-base35", "serif", f"{_URW}/P052-Roman.otf", f"{_URW}/P052-Bold.otf",
       f"{_URW}/P052-Italic.otf"),
    _f("C059 (Century Schoolbook)", "fonts-urw-base35", "serif", f"{_URW}/C059-Roman.otf",
       f"{_URW}/C059-Bold.otf", f"{_URW}/C059-Italic.otf"),
    _f("Z003 (Zapf Chancery)", "fonts-urw-base35", "script", f"{_URW}/Z003-MediumItalic.otf"),
    # GNU FreeFont
    _f("FreeSans", "fonts-freefont-ttf", "sans", f"{_TT}/freefont/FreeSans.ttf", f"{_TT}/freefont/FreeSansBold.ttf"),
    _f("FreeSerif", "fonts-freefont-ttf", "serif", f"{_TT}/freefont/FreeSerif.ttf",
       f"{_TT}/freefont/FreeSerifBold.ttf"),
    # metric-compatible with Calibri and Cambria
    _f("Carlito", "fonts-crosextra-carlito", "sans", f"{_TT}/crosextra/Carlito-Regular.ttf",
       f"{_TT}/crosextra/Carlito-Bold.ttf"),
    _f("Caladea", "fonts-crosextra-caladea", "serif", f"{_TT}/crosextra/Caladea-Regular.ttf",
       f"{_TT}/crosextra/Caladea-Bold.ttf"),
    _f("Open Sans", "fonts-open-sans", "sans", f"{_TT}/open-sans/OpenSans-Regular.ttf",
       f"{_TT}/open-sans/OpenSans-Bold.ttf", f"{_TT}/open-sans/OpenSans-Light.ttf"),
    _f("Cantarell", "fonts-cantarell", "sans", f"{_OT}/cantarell/Cantarell-Regular.otf"),
    _f("Cabin", "fonts-cabin", "sans", f"{_OT}/cabin/Cabin-Regular.otf", f"{_OT}/cabin/Cabin-Bold.otf"),
    _f("Go", "fonts-go", "sans", "/usr/share/fonts/fonts-go/Go-Regular.ttf", "/usr/share/fonts/fonts-go/Go-Bold.ttf"),
    _f("Andika", "fonts-sil-andika", "sans", f"{_TT}/andika/Andika-Regular.ttf", f"{_TT}/andika/Andika-Bold.ttf"),
    _f("Quicksand", "fonts-quicksand", "sans", f"{_TT}/quicksand/Quicksand-Regular.ttf",
       f"{_TT}/quicksand/Quicksand-Bold.ttf"),
    _f("Comfortaa", "fonts-comfortaa", "sans", f"{_TT}/comfortaa/Comfortaa-Regular.ttf",
       f"{_TT}/comfortaa/Comfortaa-Bold.ttf"),
    _f("League Spartan", "fonts-league-spartan", "sans", f"{_OT}/league-spartan/LeagueSpartan-Regular.otf",
       f"{_OT}/league-spartan/LeagueSpartan-Bold.otf"),
    _f("Yanone Kaffeesatz", "fonts-yanone-kaffeesatz", "sans",
       f"{_OT}/yanone-kaffeesatz/YanoneKaffeesatz-Regular.otf", f"{_OT}/yanone-kaffeesatz/YanoneKaffeesatz-Bold.otf"),
    _f("EB Garamond", "fonts-ebgaramond", "serif", f"{_OT}/ebgaramond/EBGaramond12-Regular.otf",
       f"{_OT}/ebgaramond/EBGaramond12-Bold.otf"),
    _f("Old Standard TT", "fonts-oldstandard", "serif", f"{_TT}/fonts-oldstandard/OldStandard-Regular.ttf",
       f"{_TT}/fonts-oldstandard/OldStandard-Bold.ttf"),
    _f("Linux Libertine", "fonts-linuxlibertine", "serif", f"{_OT}/linux-libertine/LinLibertine_R.otf",
       f"{_OT}/linux-libertine/LinLibertine_RB.otf"),
    _f("Courier Prime", "fonts-courier-prime", "mono", f"{_OT}/courier-prime/Courier Prime.otf",
       f"{_OT}/courier-prime/Courier Prime Bold.otf"),
    _f("Inconsolata", "fonts-inconsolata", "mono", f"{_TT}/inconsolata/Inconsolata.otf"),
    # informal and handwriting-like
    _f("Comic Neue", "fonts-comic-neue", "hand", f"{_OT}/comic-neue/ComicNeue-Regular.otf",
       f"{_OT}/comic-neue/ComicNeue-Bold.otf", f"{_OT}/comic-neue/ComicNeue-Italic.otf"),
    _f("Humor Sans", "fonts-humor-sans", "hand", f"{_TT}/humor-sans/Humor-Sans.ttf"),
    _f("DkgHandwriting", "fonts-dkg-handwriting", "hand", f"{_TT}/fifthhorseman/dkg.ttf",
       f"{_TT}/fifthhorseman/dkgBd.ttf"),
    # script and calligraphic
    _f("Dancing Script", "fonts-dancingscript", "script", f"{_OT}/dancingscript/DancingScript-Regular.otf",
       f"{_OT}/dancingscript/DancingScript-Bold.otf"),
    _f("Lobster Two", "fonts-lobstertwo", "script", f"{_OT}/lobstertwo/LobsterTwo-Regular.otf",
       f"{_OT}/lobstertwo/LobsterTwo-Bold.otf"),
    _f("Isabella", "fonts-isabella", "script", f"{_TT}/isabella/Isabella.ttf"),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)
PACKAGES = tuple(sorted({f.package for f in FAMILIES}))


def available_families() -> tuple[FontFamily, ...]:
    """Families with at least one font file on this machine."""
    return tuple(f for f in FAMILIES if f.available())


def missing_packages() -> tuple[str, ...]:
    """Debian packages of families whose regular font file is not on this machine."""
    return tuple(sorted({f.package for f in FAMILIES if not Path(f.files[0]).is_file()}))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["missing"]:
        print(" ".join(missing_packages()))
    elif argv == ["packages"]:
        print(" ".join(PACKAGES))
    elif argv == ["list"]:
        for f in FAMILIES:
            print(f"{f.name:28s} {f.category:7s} {f.package:26s} {len(f.available())}/{len(f.files)} files")
    else:
        print("usage: python -m evaluation.fonts missing|packages|list", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
