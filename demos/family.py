"""Family tab: two parents' photos -> aligned faces -> projections -> children."""

from __future__ import annotations

import hashlib

import gradio as gr

from demos.common import AppContext, ImageUpload, caption, model_panel, read_upload

GROUPS = ("coarse", "middle", "fine")
GROUP_HELP = {"coarse": "face shape, pose", "middle": "features, hair", "fine": "colour, skin texture"}


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    from core.family import DISCLAIMER

    gr.Markdown(f"Upload a photo of each parent. Faces are found and aligned, projected into a face model, then blended. _{DISCLAIMER}_")
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "family", tag="faces", label="Face model")
            with gr.Row():
                father = ImageUpload(label="Father", type="filepath", elem_id="family_father")
                mother = ImageUpload(label="Mother", type="filepath", elem_id="family_mother")
            with gr.Row():
                father_crop = gr.Image(label="Father, aligned", format="png", interactive=False, elem_id="family_father_crop")
                mother_crop = gr.Image(label="Mother, aligned", format="png", interactive=False, elem_id="family_mother_crop")
            align_note = gr.Markdown("", elem_id="family_align_note")
            steps = gr.Slider(1, ctx.max_steps, value=200, step=1, label="Projection steps", elem_id="family_steps")
            with gr.Row():
                project_btn = gr.Button("Project parents", variant="primary", elem_id="family_project")
                stop = gr.Button("Stop", elem_id="family_stop")
            status = gr.Markdown("", elem_id="family_status")
            with gr.Row():
                father_proj = gr.Image(label="Father, projected", format="png", interactive=False, elem_id="family_father_proj")
                mother_proj = gr.Image(label="Mother, projected", format="png", interactive=False, elem_id="family_mother_proj")
        with gr.Column(scale=1):
            gene = gr.Slider(0, 1, value=0.5, step=0.01, label="Genes: father ← → mother", elem_id="family_gene")
            with gr.Group():
                gr.Markdown("Per-layer dominance (StyleGAN W+; autoencoders blend everything with the gene weight)")
                dominance = [gr.Radio(["blend", "father", "mother"], value="blend", label=f"{g} layers ({GROUP_HELP[g]})",
                                      elem_id=f"family_dom_{g}") for g in GROUPS]
            age = gr.Slider(-3, 3, value=0, step=0.1, label="Age (younger ← → older, in std of the training data)", elem_id="family_age")
            gender = gr.Slider(-3, 3, value=0, step=0.1, label="Gender (← → along the model's gender direction)", elem_id="family_gender")
            with gr.Row():
                extra = gr.Dropdown([], value=None, label="Another direction", allow_custom_value=True, elem_id="family_extra")
                extra_amount = gr.Slider(-3, 3, value=0, step=0.1, label="Amount (std)", elem_id="family_extra_amount")
            directions_note = gr.Markdown("", elem_id="family_directions")
            variation = gr.Slider(0, 1, value=0.25, step=0.01, label="Variation between children", elem_id="family_variation")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed", elem_id="family_seed")
                count = gr.Slider(1, 12, value=4, step=1, label="Children", elem_id="family_count")
            generate = gr.Button("Make children", variant="primary", elem_id="family_generate")
            children = gr.Gallery(label="Children", columns=4, format="png", height="auto", elem_id="family_children")
            files = gr.File(label="Downloads (each child .png + its latent .npz)", file_count="multiple", interactive=False,
                            elem_id="family_files")
            with gr.Row():
                which = gr.Number(0, precision=0, label="Morph child #", elem_id="family_morph_index")
                morph_btn = gr.Button("Morph father → child → mother (MP4)", elem_id="family_morph")
            video = gr.Video(label="Morph", interactive=False, elem_id="family_video")

    def aligned(name, path, who, request):
        """(crop PIL, warnings) of one parent, on the chosen model's resolution."""
        from core.image_input import model_input

        m = ctx.model(name)
        img = read_upload(ctx, path, request, what=f"{who}'s photo")
        try:
            crop, warnings = model_input(img, m.image_size, m.channels, align_face=True)
        except ValueError as e:
            raise gr.Error(f"{who.capitalize()}'s photo: {e}") from e
        return crop, [f"{who.capitalize()}: {w}" for w in warnings]

    def align_both(name, fpath, mpath, request: gr.Request):
        out, notes = [], []
        for path, who in ((fpath, "father"), (mpath, "mother")):
            if not path:
                out.append(None)
                continue
            crop, warnings = aligned(name, path, who, request)
            notes += warnings
            out.append(ctx.save_image(request, crop, f"{who}_crop", min_side=256))
        for w in notes:
            gr.Warning(w)
        return out[0], out[1], "\n".join(f"- {w}" for w in notes)

    def projections(name, fpath, mpath, n_steps, request, progress):
        """Both parents' latents, projecting only what this session has not projected yet. Generator."""
        import torch

        from core.images import from_pil
        from core.projection import ProjectionConfig, project

        m = ctx.model(name)
        space = "w+" if "w+" in m.spaces else m.default_space
        result = {}
        for path, who in ((fpath, "father"), (mpath, "mother")):
            if not path:
                raise gr.Error(f"Upload the {who}'s photo first.")
            crop, _ = aligned(name, path, who, request)
            cfg = ProjectionConfig.for_model(m, space, steps=int(n_steps), preview_every=0)
            key = (name, space, int(n_steps), cfg.loss, crop.mode, crop.size, hashlib.sha256(crop.tobytes()).hexdigest())
            cached = ctx.session_cache(request).get(key)
            if cached is None:
                for ev in project(m, from_pil(crop, m.channels), cfg):
                    progress(ev.step / ev.steps, desc=f"projecting the {who}: step {ev.step}/{ev.steps}, PSNR {ev.psnr:.1f} dB")
                    if not ev.done and ev.step % max(1, ev.steps // 10) == 0:
                        yield who, ev
                    if ev.done:
                        cached = (ev.latent, ev.psnr, ev.preview, ev.loss_name)
                ctx.session_cache(request)[key] = cached
            result[who] = cached
        yield "done", (m, space, torch.as_tensor(result["father"][0]), torch.as_tensor(result["mother"][0]), result)

    def project_parents(name, fpath, mpath, n_steps, request: gr.Request, progress=gr.Progress()):
        from core.images import to_pil

        for tag, payload in projections(name, fpath, mpath, n_steps, request, progress):
            if tag != "done":
                yield gr.update(), gr.update(), f"Projecting the {tag}: step {payload.step}/{payload.steps}, PSNR {payload.psnr:.1f} dB"
                continue
            m, space, _, _, res = payload
            imgs = [ctx.save_image(request, to_pil(res[w][2])[0], f"{w}_projection", min_side=256) for w in ("father", "mother")]
            yield (imgs[0], imgs[1], f"Both parents projected into **{space}** of {m.card.title} "
                   f"(PSNR father {res['father'][1]:.1f} dB, mother {res['mother'][1]:.1f} dB; {res['father'][3]} loss).")

    def settings_from(m, space, gene_w, dom, age_v, gender_v, extra_name, extra_v, var, seed_v, n, dirs):
        from core.family import ChildSettings

        groups = m.layer_groups(space)
        wanted = {"age": float(age_v or 0), "gender": float(gender_v or 0)}
        if extra_name:
            wanted[extra_name] = float(extra_v or 0)
        names = {d.name for d in dirs}
        return ChildSettings(
            gene_weight=float(gene_w), dominance={g: d for g, d in zip(GROUPS, dom, strict=True) if g in groups},
            attributes={k: v for k, v in wanted.items() if v and k in names}, variation=float(var or 0),
            seed=int(seed_v or 0), children=int(n or 1),
        )

    def make(name, fpath, mpath, n_steps, gene_w, d0, d1, d2, age_v, gender_v, extra_name, extra_v, var, seed_v, n,
             request: gr.Request, progress=gr.Progress()):
        from core.export import save_latent
        from core.family import DISCLAIMER, make_children
        from core.images import to_pil
        from core.user_directions import directions_for

        for tag, payload in projections(name, fpath, mpath, n_steps, request, progress):
            if tag != "done":
                yield gr.update(), gr.update(), f"Projecting the {tag} first: step {payload.step}/{payload.steps}", gr.update(), gr.update()
        m, space, f, mo, res = payload
        dirs = directions_for(name, m)
        settings = settings_from(m, space, gene_w, (d0, d1, d2), age_v, gender_v, extra_name, extra_v, var, seed_v, n, dirs)
        try:
            lat = make_children(m, f, mo, space, settings, dirs)
        except ValueError as e:
            raise gr.Error(str(e)) from e
        images = to_pil(m.generate(lat, space))
        label = caption(ctx, name)
        gallery, out = [], []
        for i, (img, z) in enumerate(zip(images, lat, strict=True)):
            png = ctx.save_image(request, img, f"child{i}")
            npz = save_latent(ctx.new_file(request, ".npz", f"child{i}"), z[None], model=name, space=space,
                              gene_weight=settings.gene_weight, dominance=settings.dominance, attributes=settings.attributes,
                              variation=settings.variation, seed=settings.seed, index=i, licence=m.card.licence, note=DISCLAIMER)
            gallery.append((ctx.save_image(request, img, f"child{i}_view", min_side=256), f"child #{i} · {label}"))
            out += [png, str(npz)]
        parents = [ctx.save_image(request, to_pil(res[w][2])[0], f"{w}_projection", min_side=256) for w in ("father", "mother")]
        yield gallery, out, f"{len(images)} children. _{label}. {DISCLAIMER}_", *parents

    def morph_video(name, fpath, mpath, n_steps, gene_w, d0, d1, d2, age_v, gender_v, extra_name, extra_v, var, seed_v, n, index,
                    request: gr.Request, progress=gr.Progress()):
        from core.export import save_mp4
        from core.family import make_children, morph
        from core.images import to_pil
        from core.user_directions import directions_for

        *_, (_, (m, space, f, mo, _)) = projections(name, fpath, mpath, n_steps, request, progress)
        dirs = directions_for(name, m)
        settings = settings_from(m, space, gene_w, (d0, d1, d2), age_v, gender_v, extra_name, extra_v, var, seed_v, n, dirs)
        kids = make_children(m, f, mo, space, settings, dirs)
        i = int(index or 0)
        if not 0 <= i < len(kids):
            raise gr.Error(f"Choose a child number between 0 and {len(kids) - 1}.")
        frames = to_pil(m.generate(morph(f.to(m.device), kids[i], mo.to(m.device), 32), space))
        return str(save_mp4(frames, ctx.new_file(request, ".mp4", "morph"), fps=12, boomerang=True))

    def directions_info(name):
        """What each direction is and how well it did on held-out data; the extra-direction choices."""
        from core.user_directions import directions_for

        if not name or ctx.registry.status(name) == "not downloaded":
            return "Age and gender sliders work where the model has those directions.", gr.update(choices=[], value=None)
        dirs = directions_for(name, ctx.model(name))
        if not dirs:
            return ("This model has no attribute directions yet (`python app.py directions` makes them from labelled photos); "
                    "the age and gender sliders do nothing."), gr.update(choices=[], value=None)
        lines = []
        for d in dirs:
            if d.method == "pca":
                continue
            towards = f" (positive = {d.metrics['positive_class']})" if "positive_class" in d.metrics else ""
            lines.append(f"- {d.describe()}{towards}")
        pcs = [d for d in dirs if d.method == "pca"]
        if pcs:
            shares = ", ".join(f"{d.metrics['explained_variance_ratio']:.0%}" for d in pcs[:5])
            lines.append(f"- PC1–PC{len(pcs)}: principal components of {pcs[0].source} (GANSpace-style, unsupervised): "
                         f"{shares}… of the variance")
        others = [d.name for d in dirs if d.name not in ("age", "gender")]
        return "Directions of this model:\n" + "\n".join(lines), gr.update(choices=others, value=others[0] if others else None)

    both = [model, father, mother]
    child_inputs = [model, father, mother, steps, gene, *dominance, age, gender, extra, extra_amount, variation, seed, count]
    father.change(align_both, both, [father_crop, mother_crop, align_note], api_name="family_align")
    mother.change(align_both, both, [father_crop, mother_crop, align_note], api_name="family_align_mother")
    ev = project_btn.click(project_parents, [*both, steps], [father_proj, mother_proj, status], api_name="family_project",
                           show_progress_on=[status], concurrency_id="heavy")
    gen = generate.click(make, child_inputs, [children, files, status, father_proj, mother_proj], api_name="family_children", concurrency_id="heavy")
    for slider in (gene, age, gender, extra_amount, variation):
        slider.release(make, child_inputs, [children, files, status, father_proj, mother_proj], api_name=f"family_children_{slider.elem_id}",
                       api_visibility="undocumented", concurrency_id="heavy")
    mv = morph_btn.click(morph_video, [*child_inputs, which], video, api_name="family_morph", concurrency_id="heavy")
    stop.click(None, None, None, cancels=[ev, gen, mv], api_name="family_stop", api_visibility="private")
    gr.on([model.change, demo.load], directions_info, model, [directions_note, extra], api_name="family_directions",
          show_progress="hidden")
