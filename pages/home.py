"""Home: what XWP and XWPc are, what each page does, and how to cite the paper."""

import streamlit as st

from xwp.app import frame, home_page, session
from xwp.app.routes import PAGES
from xwp.app.safe import md

CITATION = """@unpublished{lympelopoulos2026xwp,
  author = {Thodoris Lympelopoulos and Denia Kanellopoulou},
  title  = {From Weight Perturbation to Feature Attribution for Explaining
            Fully Connected Neural Networks},
  year   = {2026},
  note   = {Manuscript under review}
}"""


def main() -> None:
    frame.routed("pages/home.py")
    st.title("XWP explainer")
    st.markdown(
        "A fully connected network learns by moving its first-layer weights away from their random initial "
        "values. **XWP** (Explainable Weight Perturbation) asks, for every input pixel *i*: how much of the "
        "network's evidence for the target class goes away if the weights attached to that pixel, $W_i$, go "
        "back to their initial values $W_i^0$? The input itself is never altered, so there is no baseline "
        "image to choose and no out-of-distribution input."
    )
    left, right = st.columns([1.1, 1], gap="large")
    with left:
        st.markdown("##### XWP (eq. 3): what did pixel *i* achieve, given every other update?")
        st.latex(r"R_i(x) = \sum_n I_n \left( f_n(x) - f_n^{\,W_i = W_i^0}(x) \right)")
        st.markdown("##### XWPᶜ: what does pixel *i* achieve by itself?")
        st.latex(r"R^c_i(x) = \sum_n I_n \left( f_n^{\,W = W^0,\; W_i = W_i}(x) - f_n^{\,W = W^0}(x) \right)")
        st.markdown(
            r"$f_n$ is the softmax output for class $n$ and $I_n = +1$ for the target class, $-1$ for every "
            r"other class. Only first-layer weights change; biases and deeper layers stay trained. "
            r"Red pixels support the target class, blue pixels speak against it."
        )
        st.caption(
            "A note on XWPᶜ: the paper prints eq. 5 as $\\sum_n I_n (f_n(x) - f_n^{W_{i'} = W_{i'}^0}(x))$ "
            "with $i'$ every feature but $i$. Read literally, that equals a constant minus $R^c_i(x)$, so it "
            "ranks the features in reverse (background first), which contradicts the paper's own figures and "
            "table. This app implements the text's reading, “what did feature *i* achieve by itself”: start "
            "from the initial first layer and give only pixel *i* its trained weights back."
        )
    with right:
        entry = session.active_model()
        if entry is not None:
            png = home_page.home_example(entry)
            if png:
                st.image(
                    png,
                    caption=f"XWP and XWPᶜ for three test images, explaining the true class, with the "
                    f"active model “{md(entry.name)}”. Red: evidence for the class; blue: against.",
                )
            else:
                st.info("The active model's test images are not available here; try the Explain page.")

    st.subheader("The pages")
    cols = st.columns(4)
    for col, p in zip(cols, PAGES[1:], strict=True):
        with col.container(border=True):
            st.page_link(p.path, label=f"**{p.title}**", icon=p.icon)
            st.caption(p.summary)

    st.subheader("How to cite")
    st.markdown(
        "Thodoris Lympelopoulos and Denia Kanellopoulou. *From Weight Perturbation to Feature Attribution for "
        "Explaining Fully Connected Neural Networks.* 2026. Manuscript under review."
    )
    st.code(CITATION, language="bibtex")


main()
